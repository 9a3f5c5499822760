//! The gateway's search index: for each record of the charts the member may list now (and of the
//! organisation's directory), its ledger entry and the [`Terms`] its search parameters look at.
//!
//! It is built from the ledger incrementally. Each search asks the ledger which charts the member
//! may list and when each one's record list last changed (its head: one request per 1,000
//! charts); only a chart whose head moved is listed again, and only a version not seen before is
//! read (an audited access, decrypted into the encrypted cache). A search then filters, sorts and
//! counts in memory, and only the page it returns is read again, audited, so the ledger decides
//! every resource that leaves (a grant revoked since the index saw it: the read is denied, the
//! resource is dropped from the page and from the index). A chart the member may no longer list
//! leaves the index at the next search.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use medledger_ledger::state::RecordEntry;
use medledger_sdk::SdkError;
use medledger_types::{MemberId, RecordId, Role};
use serde_json::{Map, Value};

use crate::fhir::{self, FhirError};
use crate::params::{Filter, Sort, Terms};
use crate::service::{FhirResult, Gateway, SEARCH_CHARTS_MAX, Search, Stored, is_deleted, rfc3339};

/// Charts listed at once while the index catches up.
const LISTS_IN_FLIGHT: usize = 8;
/// Records read (audited) per batch while the index catches up.
const READ_BATCH: usize = 512;

/// One record in the index, at its current version.
#[derive(Debug)]
pub struct Indexed {
    pub entry: RecordEntry,
    pub resource_type: Box<str>,
    pub terms: Terms,
    /// Deleted through the API (a version marked entered in error): found by no search.
    pub deleted: bool,
}

impl Indexed {
    /// From the resource's text as stored in the record.
    pub fn new(entry: RecordEntry, resource: &Map<String, Value>) -> Indexed {
        let resource_type = fhir::resource_type(resource);
        let id = if resource_type == "Patient" { entry.patient.to_hex() } else { entry.record.to_hex() };
        Indexed {
            resource_type: resource_type.into(),
            terms: Terms::of(resource, &id, &rfc3339(entry.created_at)),
            deleted: is_deleted(resource),
            entry,
        }
    }

    /// The resource's FHIR id: its record's, a Patient's its patient's.
    pub fn id(&self) -> &str {
        self.terms.id()
    }
}

/// One chart as the index last listed it.
#[derive(Default)]
struct Chart {
    head: u64,
    records: HashSet<RecordId>,
    /// Versions that are not FHIR resources (a PDF, a file): not read again.
    not_fhir: HashSet<(RecordId, u32)>,
}

#[derive(Default)]
struct State {
    records: HashMap<RecordId, Arc<Indexed>>,
    /// The same records by resource type: a search of one type looks at that type's only.
    by_type: HashMap<Box<str>, HashMap<RecordId, Arc<Indexed>>>,
    charts: HashMap<MemberId, Chart>,
}

impl State {
    fn insert(&mut self, indexed: Arc<Indexed>) {
        let record = indexed.entry.record;
        self.remove(&record);
        self.by_type.entry(indexed.resource_type.clone()).or_default().insert(record, Arc::clone(&indexed));
        self.records.insert(record, indexed);
    }

    fn remove(&mut self, record: &RecordId) -> Option<Arc<Indexed>> {
        let gone = self.records.remove(record)?;
        if let Some(of_type) = self.by_type.get_mut(&gone.resource_type) {
            of_type.remove(record);
        }
        Some(gone)
    }
}

/// The versions a search's catch-up read (audited) for this very request.
#[derive(Debug, Default)]
pub struct JustRead(HashSet<(RecordId, u32)>);

/// What a search matches (see [`Gateway::find`]), and what its catch-up read meanwhile.
pub struct Found {
    pub hits: Vec<Arc<Indexed>>,
    pub just_read: JustRead,
}

/// The last catch-up over every chart: the height the next one asks `since`, and the charts it
/// found the member may list.
struct Look {
    as_of: Option<u64>,
    scope: HashSet<MemberId>,
}

#[derive(Default)]
pub struct Index {
    state: RwLock<State>,
    /// One catch-up at a time; searches arriving meanwhile wait for it, then ask only what moved.
    catching_up: tokio::sync::Mutex<Option<Look>>,
}

impl Index {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A record the member was refused, or that is gone.
    pub fn remove(&self, record: &RecordId) {
        let mut state = self.write();
        if let Some(gone) = state.remove(record)
            && let Some(chart) = state.charts.get_mut(&gone.entry.patient)
        {
            chart.records.remove(record);
        }
    }

    fn forget_chart(&self, chart: &MemberId) {
        let mut state = self.write();
        if let Some(gone) = state.charts.remove(chart) {
            for record in gone.records {
                state.remove(&record);
            }
        }
    }
}

impl Gateway {
    /// Brings the index up to date with the ledger for `only` (one chart) or every chart the
    /// member may list, and returns the charts a search may look in.
    async fn catch_up(&self, only: Option<MemberId>, fresh: bool) -> FhirResult<(HashSet<MemberId>, JustRead)> {
        let mut last = self.index.catching_up.lock().await;
        let client = &self.session.client;
        let head_of = |chart: MemberId| async move {
            match client.records_head(&self.me, &chart).await {
                Ok(head) => Ok(Some(head)),
                Err(SdkError::Denied(_) | SdkError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        };
        // Since the last look over every chart, only the charts whose head moved (one page, as a
        // rule); the first look, or one asked fresh, lists them all.
        let since = last.as_ref().filter(|_| !fresh).and_then(|l| l.as_of);
        let (heads, as_of, mut scope) = match only {
            Some(chart) => (vec![(chart, head_of(chart).await?)], None, HashSet::new()),
            None => {
                let teams: Vec<MemberId> = self.session.home.teams().unwrap_or_default().into_values().collect();
                let found = self.session.chart_heads(&self.me, &teams, SEARCH_CHARTS_MAX, since).await?;
                let mut heads = found.charts;
                if self.me.role != Role::Patient {
                    let directory = self.patientless_owner();
                    heads.push((directory, head_of(directory).await?));
                }
                let scope = match (since, last.as_ref()) {
                    (Some(_), Some(previous)) => previous.scope.clone(),
                    _ => HashSet::new(),
                };
                (heads, found.as_of, scope)
            }
        };
        let mut stale = Vec::new();
        let mut just_read = JustRead::default();
        for (chart, head) in heads {
            match head {
                None => {
                    self.index.forget_chart(&chart);
                    scope.remove(&chart);
                }
                Some(head) => {
                    scope.insert(chart);
                    if self.index.read().charts.get(&chart).is_none_or(|c| c.head != head) {
                        stale.push((chart, head));
                    }
                }
            }
        }
        let listed: Vec<_> = futures::stream::iter(stale)
            .map(|(chart, head)| async move { (chart, head, self.list_chart(chart).await) })
            .buffer_unordered(LISTS_IN_FLIGHT)
            .collect()
            .await;
        for (chart, head, entries) in listed {
            let entries = match entries {
                Ok(entries) => entries,
                // Refused since the head was read (a grant that just ended).
                Err(SdkError::Denied(_)) => {
                    self.index.forget_chart(&chart);
                    scope.remove(&chart);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            self.index_chart(chart, head, entries, &mut just_read).await?;
        }
        if only.is_none() {
            *last = Some(Look { as_of, scope: scope.clone() });
        }
        Ok((scope, just_read))
    }

    /// Every record entry of a chart (or of the directory), all pages.
    async fn list_chart(&self, chart: MemberId) -> medledger_sdk::Result<Vec<RecordEntry>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, next) = self.session.client.patient_records_page(&self.me, &chart, after.as_deref()).await?;
            out.extend(page);
            match next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Makes the index hold exactly `entries` for `chart`: versions indexed already stay, those
    /// in the encrypted cache are indexed from it, the rest are read (audited) in batches.
    async fn index_chart(
        &self,
        chart: MemberId,
        head: u64,
        entries: Vec<RecordEntry>,
        just_read: &mut JustRead,
    ) -> FhirResult<()> {
        let entries = self.without_unreadable_sensitive(chart, entries).await?;
        let not_fhir = self.index.read().charts.get(&chart).map(|c| c.not_fhir.clone()).unwrap_or_default();
        let mut ready = Vec::new();
        let mut unread = Vec::new();
        {
            let state = self.index.read();
            for entry in entries {
                if not_fhir.contains(&(entry.record, entry.version)) {
                    continue;
                }
                match state.records.get(&entry.record) {
                    Some(known) if known.entry.version == entry.version => ready.push(Arc::clone(known)),
                    _ => match self.cache.get(&entry.record).filter(|c| c.version == entry.version) {
                        Some(cached) => match serde_json::from_str::<Map<String, Value>>(&cached.resource) {
                            Ok(resource) => ready.push(Arc::new(Indexed::new(entry, &resource))),
                            Err(_) => unread.push(entry),
                        },
                        None => unread.push(entry),
                    },
                }
            }
        }
        let mut now_not_fhir = HashSet::new();
        for batch in unread.chunks(READ_BATCH) {
            for (entry, read) in batch.iter().zip(self.read_entries(batch).await?) {
                match read {
                    Ok(stored) => {
                        just_read.0.insert((entry.record, entry.version));
                        ready.push(Arc::new(Indexed::new(entry.clone(), &stored.resource)));
                    }
                    // Not a FHIR resource (a PDF, a file): that version is never indexed, nor read again.
                    Err(e) if e.status == 415 => {
                        now_not_fhir.insert((entry.record, entry.version));
                    }
                    // Not this member's to read now: left out, asked again when the chart's head
                    // moves (a grant given, a reader changed).
                    Err(e) if matches!(e.status, 403 | 404 | 410) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let mut state = self.index.write();
        let previous = state.charts.remove(&chart).unwrap_or_default();
        for record in &previous.records {
            state.remove(record);
        }
        let mut kept = Chart { head, not_fhir: now_not_fhir, ..Chart::default() };
        kept.not_fhir.extend(not_fhir.into_iter().filter(|(r, _)| ready.iter().all(|i| i.entry.record != *r)));
        for indexed in ready {
            kept.records.insert(indexed.entry.record);
            state.insert(indexed);
        }
        state.charts.insert(chart, kept);
        Ok(())
    }

    /// The records a search matches, from the index (caught up with the ledger first), the
    /// first `sorted` of them in order (by `sort`, else by type and id; the rest in no order: a
    /// page needs only its own, and a count none). Nothing is read: see [`Gateway::read_hits`].
    pub async fn find(
        &self,
        search: &Search,
        filters: &[Filter],
        sort: Option<&Sort>,
        sorted: usize,
    ) -> FhirResult<Found> {
        let (scope, just_read) = self.catch_up(search.patient, search.fresh).await?;
        if let Some(patient) = search.patient
            && !scope.contains(&patient)
        {
            return Err(FhirError::forbidden("this member may not list that patient's records"));
        }
        let mut hits: Vec<Arc<Indexed>> = {
            let state = self.index.read();
            let candidates: Box<dyn Iterator<Item = &Arc<Indexed>>> = match search.resource_type.as_deref() {
                Some(kind) => Box::new(state.by_type.get(kind).into_iter().flat_map(HashMap::values)),
                None => Box::new(state.records.values()),
            };
            candidates
                .filter(|i| {
                    search.resource_type.as_deref().is_none_or(|t| *i.resource_type == *t)
                        && !i.deleted
                        && scope.contains(&i.entry.patient)
                        && (search.ids.is_empty() || search.ids.iter().any(|id| id == i.id()))
                        && filters.iter().all(|f| f.matches(&i.terms))
                })
                .cloned()
                .collect()
        };
        let order = |a: &Arc<Indexed>, b: &Arc<Indexed>| match sort {
            Some(sort) if sort.descending() => sort.key_of(&b.terms).cmp(sort.key_of(&a.terms)),
            Some(sort) => sort.key_of(&a.terms).cmp(sort.key_of(&b.terms)),
            None => (&*a.resource_type, a.id()).cmp(&(&*b.resource_type, b.id())),
        };
        let sorted = sorted.min(hits.len());
        if sorted < hits.len() {
            hits.select_nth_unstable_by(sorted, order);
        }
        hits[..sorted].sort_by(order);
        Ok(Found { hits, just_read })
    }

    /// Reads `hits` (one batch of audited accesses, served from the cache where it holds the
    /// version); those the ledger refuses now, or deleted meanwhile, are left out. A version the
    /// same search's catch-up read (`just_read`: an audited access committed moments ago, for this
    /// request) is not read again: one audit event per resource returned.
    pub async fn read_hits(&self, hits: &[Arc<Indexed>], just_read: &JustRead) -> FhirResult<Vec<Stored>> {
        let cached = |h: &Arc<Indexed>| {
            just_read
                .0
                .contains(&(h.entry.record, h.entry.version))
                .then(|| self.cache.get(&h.entry.record).filter(|c| c.version == h.entry.version))
                .flatten()
        };
        let entries: Vec<RecordEntry> = hits.iter().filter(|h| cached(h).is_none()).map(|h| h.entry.clone()).collect();
        let mut reads = self.read_entries(&entries).await?.into_iter();
        let mut out = Vec::with_capacity(hits.len());
        for hit in hits {
            let (entry, read) = match cached(hit) {
                Some(c) => (&hit.entry, self.stored(&hit.entry, &c.resource)),
                None => (&hit.entry, reads.next().unwrap_or_else(|| Err(FhirError::not_found("not read")))),
            };
            match read {
                Ok(stored) if !is_deleted(&stored.resource) => out.push(stored),
                Ok(_) => {}
                Err(e) if matches!(e.status, 403 | 404 | 410 | 415) => self.index.remove(&entry.record),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The resource behind `hit` as this gateway's encrypted cache holds it (the member read or
    /// wrote that version before), for lookups that return nothing by themselves; `None` when
    /// the cache does not hold that version.
    pub fn local_resource(&self, hit: &Indexed) -> Option<Map<String, Value>> {
        let cached = self.cache.get(&hit.entry.record).filter(|c| c.version == hit.entry.version)?;
        serde_json::from_str(&cached.resource).ok()
    }

    /// Every resource a search matches, read (audited): for `$everything`-like uses that return
    /// them all (an export, `_revinclude`).
    pub async fn search(&self, search: &Search) -> FhirResult<Vec<Stored>> {
        let found = self.find(search, &[], None, usize::MAX).await?;
        self.read_hits(&found.hits, &found.just_read).await
    }
}
