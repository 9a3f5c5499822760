//! OpenAPI schemas of the wire representations of these types (hex strings, counters, codes),
//! for the node's API document. The serde representations are the source of truth; a test in the
//! node checks the document against real responses.

use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::{KnownFormat, ObjectBuilder, RefOr, SchemaFormat};

use crate::limits::ORG_ID_BYTES_MAX;

/// `len` bytes as lowercase hex.
pub fn hex_string(len: usize, what: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(format!("^[0-9a-f]{{{}}}$", len * 2)))
        .description(Some(format!("{what}: {len} bytes, lowercase hex")))
        .into()
}

/// A non-negative 64-bit counter.
pub fn counter(what: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .description(Some(what.to_string()))
        .into()
}

/// An organisation id.
pub fn org_id() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(format!("^[a-z0-9_-]{{1,{ORG_ID_BYTES_MAX}}}$")))
        .into()
}

/// One of a fixed set of codes.
pub fn code(values: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)).enum_values(Some(values.to_vec())).into()
}
