//! The gateway's search index: for each record of the charts the member may list now (and of the
//! organisation's directory), its ledger entry and the [`Terms`] its search parameters look at.
//!
//! It is built from the ledger incrementally. Each search asks the ledger which charts moved
//! (their records or readers) since its last look, with those charts' record entries, a thousand
//! entries per request (`GET /v1/members/{id}/records?since=`); only a version not seen before is
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

/// Charts listed (or indexed) at once while the index catches up.
const LISTS_IN_FLIGHT: usize = 8;
/// Most charts a fresh look lists one request each; with more to list, it lists every chart's
/// entries in pages instead.
const LISTED_ONE_BY_ONE_MAX: usize = 64;
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
        let mut just_read = JustRead::default();
        if let Some(chart) = only {
            let mut scope = HashSet::new();
            let head = self.head_of(chart).await?;
            self.catch_up_charts(vec![(chart, head)], &mut scope, &mut just_read).await?;
            return Ok((scope, just_read));
        }
        // One chart outside the member's chart list: a patient's own, or the directory.
        let own = if self.me.role == Role::Patient { self.me.member } else { self.patientless_owner() };
        let own_head = self.head_of(own).await?;
        // (What the last look holds is not borrowed across an await: the future stays `Send`.)
        let since_last = match last.as_ref() {
            Some(_) if fresh => None,
            Some(previous) => Some(previous.as_of),
            None => None,
        };
        let (mut scope, as_of) = match (last.is_some(), since_last) {
            // Fresh (`Cache-Control: no-cache`): every chart's head asked again, and the charts
            // whose head is not the index's listed again (one request each: few, as a rule).
            (true, None) => {
                let teams: Vec<MemberId> = self.session.home.teams().unwrap_or_default().into_values().collect();
                let found = self.session.chart_heads(&self.me, &teams, SEARCH_CHARTS_MAX, None).await?;
                let stale = {
                    let state = self.index.read();
                    found
                        .charts
                        .iter()
                        .filter(|(c, h)| h.is_some_and(|h| state.charts.get(c).is_none_or(|k| k.head != h)))
                        .count()
                };
                if stale > LISTED_ONE_BY_ONE_MAX {
                    self.bulk_look(None, &mut just_read).await?
                } else {
                    let mut scope = HashSet::new();
                    self.catch_up_charts(found.charts, &mut scope, &mut just_read).await?;
                    (scope, found.as_of)
                }
            }
            // Since the last look, only the charts whose head moved (one page, as a rule).
            (_, Some(since)) => {
                let (moved, as_of) = self.bulk_look(since, &mut just_read).await?;
                let mut scope = last.take().map(|l| l.scope).unwrap_or_default();
                scope.extend(moved);
                // A chart the member may no longer list has left the index (see `bulk_look`).
                scope.retain(|c| self.index.read().charts.contains_key(c));
                (scope, as_of)
            }
            // The first look: every chart's entries, paged by entries.
            (false, None) => self.bulk_look(None, &mut just_read).await?,
        };
        self.catch_up_charts(vec![(own, own_head)], &mut scope, &mut just_read).await?;
        *last = Some(Look { as_of, scope: scope.clone() });
        Ok((scope, just_read))
    }

    /// A chart's head, `None` when the member may not list it.
    async fn head_of(&self, chart: MemberId) -> FhirResult<Option<u64>> {
        match self.session.client.records_head(&self.me, &chart).await {
            Ok(head) => Ok(Some(head)),
            Err(SdkError::Denied(_) | SdkError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists again (one request each, a few at once) those of `heads` whose head is not the
    /// index's, and indexes them; a chart the member may not list leaves the index. `scope`
    /// gains the charts listable.
    async fn catch_up_charts(
        &self,
        heads: Vec<(MemberId, Option<u64>)>,
        scope: &mut HashSet<MemberId>,
        just_read: &mut JustRead,
    ) -> FhirResult<()> {
        let mut stale = Vec::new();
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
            .map(|(chart, head)| self.list_chart(chart, head))
            .buffer_unordered(LISTS_IN_FLIGHT)
            .collect()
            .await;
        for (chart, head, entries) in listed {
            match entries {
                Ok(entries) => self.index_chart(chart, head, entries, just_read).await?,
                // Refused since the head was read (a grant that just ended).
                Err(SdkError::Denied(_)) => {
                    self.index.forget_chart(&chart);
                    scope.remove(&chart);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Catches the index up with every chart in the member's chart list and their care teams'
    /// (with `since`, those whose head moved after it) from their record entries, a page of a
    /// thousand entries per request: each chart is indexed as soon as its entries are all in,
    /// so a look cut short (a validator gone, the signer's request budget spent) keeps what it
    /// did and the next one skips it. Returns the charts found listable and the height to ask
    /// `since` next time.
    async fn bulk_look(
        &self,
        since: Option<u64>,
        just_read: &mut JustRead,
    ) -> FhirResult<(HashSet<MemberId>, Option<u64>)> {
        let teams: Vec<MemberId> = self.session.home.teams().unwrap_or_default().into_values().collect();
        let mut scope = HashSet::new();
        let mut as_of = u64::MAX;
        for (n, of) in std::iter::once(self.me.member).chain(teams).enumerate() {
            let mut after: Option<String> = None;
            // A chart whose entries go on in the next page.
            let mut open: Option<(MemberId, u64, Vec<RecordEntry>)> = None;
            loop {
                let page = match self.session.client.reader_chart_records(&self.me, &of, after.as_deref(), since).await
                {
                    Ok(page) => page,
                    // A team this member has left (or a validator without the bulk list: the
                    // team's charts are not searched).
                    Err(SdkError::Denied(_) | SdkError::NotFound(_)) if n > 0 => break,
                    Err(e) => return Err(e.into()),
                };
                as_of = as_of.min(page.as_of);
                let mut complete = Vec::new();
                for chart in page.charts {
                    let Some(head) = chart.head else {
                        if chart.patient != of {
                            self.index.forget_chart(&chart.patient);
                        }
                        continue;
                    };
                    let mut entries = match open.take() {
                        Some((patient, _, entries)) if patient == chart.patient => entries,
                        _ => Vec::new(),
                    };
                    entries.extend(chart.records);
                    if chart.partial {
                        open = Some((chart.patient, head, entries));
                    } else if chart.patient != of {
                        scope.insert(chart.patient);
                        if self.index.read().charts.get(&chart.patient).is_none_or(|c| c.head != head) {
                            complete.push((chart.patient, head, entries));
                        }
                    }
                }
                // The charts a page completed, a few indexed at once.
                let mut indexing = futures::stream::iter(complete)
                    .map(|(chart, head, entries)| self.index_listed(chart, head, entries))
                    .buffer_unordered(LISTS_IN_FLIGHT);
                while let Some(read) = indexing.next().await {
                    just_read.0.extend(read?.0);
                }
                match page.next {
                    Some(next) if scope.len() < SEARCH_CHARTS_MAX => after = Some(next),
                    _ => break,
                }
            }
        }
        // With `since`, the charts that did not move keep their place (the caller's scope).
        if since.is_none() {
            // (A patient's own chart and the directory are outside the list: see `catch_up`.)
            let outside = [self.me.member, self.patientless_owner()];
            let gone: Vec<MemberId> = self
                .index
                .read()
                .charts
                .keys()
                .filter(|c| !scope.contains(c) && !outside.contains(c))
                .copied()
                .collect();
            for chart in gone {
                self.index.forget_chart(&chart);
            }
        }
        Ok((scope, (as_of != u64::MAX).then_some(as_of)))
    }

    /// [`Gateway::index_chart`], returning what it read.
    async fn index_listed(&self, chart: MemberId, head: u64, entries: Vec<RecordEntry>) -> FhirResult<JustRead> {
        let mut read = JustRead::default();
        self.index_chart(chart, head, entries, &mut read).await?;
        Ok(read)
    }

    /// Every record entry of a chart (or of the directory), all pages; with the chart and its
    /// head as given.
    async fn list_chart(&self, chart: MemberId, head: u64) -> (MemberId, u64, medledger_sdk::Result<Vec<RecordEntry>>) {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            match self.session.client.patient_records_page(&self.me, &chart, after.as_deref()).await {
                Ok((page, next)) => {
                    out.extend(page);
                    match next {
                        Some(next) => after = Some(next),
                        None => return (chart, head, Ok(out)),
                    }
                }
                Err(e) => return (chart, head, Err(e)),
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

    /// Catches the index up with every chart the member may list (as a search does) and returns
    /// them, for work over many charts: see [`Gateway::chart_hits`].
    pub async fn look_over_all(&self) -> FhirResult<(HashSet<MemberId>, JustRead)> {
        self.catch_up(None, false).await
    }

    /// The records of `chart` the index holds (deleted ones left out), by type and id; nothing
    /// is asked of the ledger ([`Gateway::look_over_all`] first).
    pub fn chart_hits(&self, chart: &MemberId) -> Vec<Arc<Indexed>> {
        let state = self.index.read();
        let mut hits: Vec<Arc<Indexed>> = state
            .charts
            .get(chart)
            .into_iter()
            .flat_map(|c| c.records.iter().filter_map(|r| state.records.get(r)))
            .filter(|i| !i.deleted)
            .cloned()
            .collect();
        hits.sort_by(|a, b| (&*a.resource_type, a.id()).cmp(&(&*b.resource_type, b.id())));
        hits
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
