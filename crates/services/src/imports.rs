//! CSV imports of contacts, as background jobs. The upload is kept as a file in the import folder; the job reads
//! it a batch at a time, and each batch commits with the job's progress (rows read, created, updated, skipped,
//! the errors, the byte offset of the next row) in one transaction. A crash or restart mid-import resumes at the
//! next uncommitted row ([`Contacts::resume_imports`]): never half a batch, never a row twice.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smsgate_core::consent::Source;
use smsgate_core::{AccountId, Timestamp};
use smsgate_store::{ConsentEvent, ImportBatch, Job};
use tracing::{info, warn};

use crate::contacts::{ContactSpec, Contacts};
use crate::error::{Result, ServiceError};

/// Rows a batch commits together.
pub const BATCH: usize = 1000;
/// The most errors a job keeps (the count of skipped rows goes on).
pub const MAX_ERRORS: usize = 1000;

/// What a column of the file becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Phone,
    Name,
    Email,
    TimeZone,
    /// Tags, separated by `,`, `;` or `|`.
    Tags,
    /// A custom field by this name.
    Field(String),
    Ignore,
}

impl Target {
    /// A target from its name in a mapping: `phone`, `name`, `email`, `time_zone`, `tags`, `ignore` (or empty),
    /// `fields.NAME` or any other name (a custom field). The contact fields' names are read in any case (`Phone`).
    pub fn parse(s: &str) -> Target {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "phone" => Target::Phone,
            "name" => Target::Name,
            "email" => Target::Email,
            "time_zone" => Target::TimeZone,
            "tags" => Target::Tags,
            "ignore" | "" => Target::Ignore,
            _ => Target::Field(s.strip_prefix("fields.").unwrap_or(s).to_string()),
        }
    }
}

/// How a file is read, as the caller says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mapping {
    /// Column header → target; columns not named map by their header (see [`Target::parse`]).
    pub columns: HashMap<String, String>,
    /// A list (id or name) every imported contact joins; made when no list has the name.
    pub list: Option<String>,
    /// Tags every imported contact gets.
    pub tags: Vec<String>,
    /// Whether a number the account has already is updated (the default) or left alone.
    pub update_existing: Option<bool>,
    /// The rows carry consent (the people opted in): its source, kept in each number's ledger.
    pub consent_source: Option<String>,
}

/// What a job reads, kept with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Spec {
    file: String,
    header: Vec<String>,
    targets: Vec<Target>,
    list: Option<String>,
    tags: Vec<String>,
    update: bool,
    consent_source: Option<String>,
}

/// One refused row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// The row's line in the file, the header being row 1.
    pub row: u64,
    pub column: Option<String>,
    pub code: String,
    pub message: String,
}

impl Contacts {
    /// Where an import's upload is kept: `None` when this server takes no imports (no folder set).
    pub fn import_file(&self, job: &str) -> Option<PathBuf> {
        self.import_dir.as_ref().map(|d| d.join(format!("{job}.csv")))
    }

    /// A new job id for an upload.
    pub fn new_job_id(&self) -> String {
        uuid::Uuid::now_v7().to_string()
    }

    /// Starts importing the file of `job` (written to [`Contacts::import_file`]) for `account`, read as `mapping`
    /// says; the job, `running`. Bad mappings and files without a phone column are refused before it starts.
    pub async fn begin_import(&self, account: AccountId, job: &str, mapping: Mapping) -> Result<Job> {
        let path = self.import_file(job).ok_or_else(|| invalid("imports_disabled", "this server takes no imports"))?;
        let (header, data_start) = read_header(&path)?;
        let mut targets = Vec::with_capacity(header.len());
        for column in &header {
            let target = match mapping.columns.get(column) {
                Some(named) => match Target::parse(named) {
                    Target::Field(f) if !field_name_ok(&f) => {
                        return Err(invalid(
                            "invalid_mapping",
                            format!("{named:?}: a custom field's name has 1 to 64 letters, digits or underscores"),
                        ));
                    }
                    t => t,
                },
                // A header that names no contact field becomes a custom field of its name, made a merge field's
                // name: "Next visit" is `Next_visit`.
                None => match Target::parse(column) {
                    Target::Field(f) => {
                        let name = field_name_of(&f);
                        if name.is_empty() { Target::Ignore } else { Target::Field(name) }
                    }
                    t => t,
                },
            };
            targets.push(target);
        }
        for named in mapping.columns.keys() {
            if !header.contains(named) {
                return Err(invalid("invalid_mapping", format!("the file has no column {named:?}")));
            }
        }
        if targets.iter().filter(|t| **t == Target::Phone).count() != 1 {
            return Err(invalid(
                "invalid_mapping",
                "exactly one column must map to phone (a header named phone, or \"columns\": {\"Mobile\": \"phone\"})",
            ));
        }
        let list = match &mapping.list {
            None => None,
            Some(key) => Some(match self.list_by_id_or_name(account, key).await? {
                Some(l) => l.id,
                None => self.create_list(account, key).await?.id,
            }),
        };
        let spec = Spec {
            file: path.to_string_lossy().into_owned(),
            header,
            targets,
            list,
            tags: mapping.tags,
            update: mapping.update_existing.unwrap_or(true),
            consent_source: mapping.consent_source,
        };
        let now = self.messages.now();
        let record = Job {
            id: job.to_string(),
            account_id: account,
            kind: "import".into(),
            state: "running".into(),
            spec: serde_json::to_string(&spec).unwrap_or_default(),
            rows: 0,
            created: 0,
            updated: 0,
            skipped: 0,
            next_offset: data_start,
            errors: "[]".into(),
            created_at: now,
            updated_at: now,
        };
        self.store.insert_job(&record).await?;
        let this = self.clone();
        let started = record.clone();
        tokio::spawn(async move { this.run_import(started).await });
        Ok(record)
    }

    /// An account's job.
    pub async fn job(&self, account: AccountId, id: &str) -> Result<(Job, Vec<RowError>)> {
        let job =
            self.store.job(account, id).await?.ok_or_else(|| ServiceError::not_found("not_found", "no such job"))?;
        let errors = serde_json::from_str(&job.errors).unwrap_or_default();
        Ok((job, errors))
    }

    /// Goes on with every import a stop left running (called at start).
    pub async fn resume_imports(&self) -> Result<usize> {
        let running = self.store.running_jobs().await?;
        let n = running.len();
        for job in running.into_iter().filter(|j| j.kind == "import") {
            info!(job = %job.id, rows = job.rows, "resuming an import");
            let this = self.clone();
            tokio::spawn(async move { this.run_import(job).await });
        }
        Ok(n)
    }

    async fn run_import(&self, mut job: Job) {
        let result = self.import_rows(&mut job).await;
        let now = self.messages.now();
        job.updated_at = now;
        match result {
            Ok(()) => job.state = "completed".into(),
            Err(e) => {
                warn!(job = %job.id, error = %e, "import failed");
                job.state = "failed".into();
                let mut errors: Vec<RowError> = serde_json::from_str(&job.errors).unwrap_or_default();
                errors.push(RowError { row: 0, column: None, code: e.code().into(), message: e.to_string() });
                job.errors = serde_json::to_string(&errors).unwrap_or_default();
            }
        }
        if let Err(e) = self.store.save_job(&job).await {
            warn!(job = %job.id, error = %e, "saving an import's end failed; it resumes at the next start");
            return;
        }
        if let Ok(spec) = serde_json::from_str::<Spec>(&job.spec) {
            let _ = std::fs::remove_file(&spec.file);
        }
        info!(job = %job.id, state = %job.state, rows = job.rows, created = job.created, "import ended");
    }

    async fn import_rows(&self, job: &mut Job) -> Result<()> {
        let spec: Spec = serde_json::from_str(&job.spec).map_err(|e| invalid("invalid_job", e.to_string()))?;
        let mut file = std::fs::File::open(&spec.file)
            .map_err(|e| invalid("import_file_missing", format!("the uploaded file is gone: {e}")))?;
        file.seek(SeekFrom::Start(job.next_offset)).map_err(|e| invalid("import_file_unreadable", e.to_string()))?;
        let base = job.next_offset;
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(file);
        let mut errors: Vec<RowError> = serde_json::from_str(&job.errors).unwrap_or_default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut record = csv::StringRecord::new();
        let mut next_analysis = 5_000u64.max(job.rows);
        loop {
            let mut batch = ImportBatch { update: spec.update, list: spec.list.clone(), ..ImportBatch::default() };
            let mut rows_in_batch = 0u64;
            let mut skipped = 0u64;
            while batch.contacts.len() < BATCH {
                let more = match reader.read_record(&mut record) {
                    Ok(more) => more,
                    // A row that is not UTF-8 is refused alone; the reader is past it.
                    Err(e) if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) => {
                        rows_in_batch += 1;
                        skipped += 1;
                        let row = job.rows + rows_in_batch + 1;
                        push_error(&mut errors, row, None, "invalid_encoding", "the row is not UTF-8 text".into());
                        continue;
                    }
                    Err(e) => return Err(invalid("invalid_csv", e.to_string())),
                };
                if !more {
                    break;
                }
                rows_in_batch += 1;
                let row = job.rows + rows_in_batch + 1;
                match self.row_contact(job.account_id, &spec, &record, row, job.updated_at) {
                    Ok((contact, consent)) => {
                        if !seen.insert(contact.phone.clone()) {
                            skipped += 1;
                            push_error(
                                &mut errors,
                                row,
                                Some(spec.phone_column()),
                                "duplicate_in_file",
                                format!("{} is in the file more than once; the first row was kept", contact.phone),
                            );
                            continue;
                        }
                        batch.consent.extend(consent);
                        batch.contacts.push(contact);
                    }
                    Err(e) => {
                        skipped += 1;
                        push_error(&mut errors, row, e.column.as_deref(), &e.code, e.message);
                    }
                }
            }
            if rows_in_batch == 0 {
                return Ok(());
            }
            job.rows += rows_in_batch;
            job.skipped += skipped;
            job.next_offset = base + reader.position().byte();
            job.errors = serde_json::to_string(&errors).unwrap_or_default();
            job.updated_at = self.messages.now();
            *job = self.store.import_batch(job, &batch).await?;
            // A table filled this fast is planned as if it were still small until its statistics are read again:
            // at 5,000 rows, then each time the import has four times as many.
            if job.rows >= next_analysis {
                self.store.contacts_grew().await?;
                next_analysis = job.rows.saturating_mul(4);
            }
        }
    }

    /// The contact one row makes, and the consent it carries.
    fn row_contact(
        &self,
        account: AccountId,
        spec: &Spec,
        record: &csv::StringRecord,
        row: u64,
        now: Timestamp,
    ) -> Result<(smsgate_store::Contact, Option<ConsentEvent>), RowFailure> {
        let mut c = ContactSpec { tags: spec.tags.clone(), ..ContactSpec::default() };
        let mut fields = Map::new();
        for (i, target) in spec.targets.iter().enumerate() {
            let value = record.get(i).unwrap_or("").trim();
            if value.is_empty() {
                continue;
            }
            match target {
                Target::Phone => c.phone = value.to_string(),
                Target::Name => c.name = Some(value.to_string()),
                Target::Email => c.email = Some(value.to_string()),
                Target::TimeZone => c.time_zone = Some(value.to_string()),
                Target::Tags => c
                    .tags
                    .extend(value.split([',', ';', '|']).map(str::trim).filter(|t| !t.is_empty()).map(str::to_string)),
                Target::Field(name) => {
                    fields.insert(name.clone(), field_value(value));
                }
                Target::Ignore => {}
            }
        }
        c.fields = fields;
        if c.phone.is_empty() {
            let column = spec.targets.iter().position(|t| *t == Target::Phone).map(|i| spec.header[i].clone());
            return Err(RowFailure { column, code: "missing_phone".into(), message: "the row has no number".into() });
        }
        let contact = self.build(account, c).map_err(|e| {
            let code = e.code();
            let target = match code {
                "invalid_phone" => Some(Target::Phone),
                "invalid_email" => Some(Target::Email),
                "invalid_time_zone" => Some(Target::TimeZone),
                "invalid_tags" => Some(Target::Tags),
                "invalid_name" => Some(Target::Name),
                _ => None,
            };
            let column = target.and_then(|t| spec.targets.iter().position(|x| *x == t)).map(|i| spec.header[i].clone());
            RowFailure { column, code: code.into(), message: e.to_string() }
        })?;
        let consent = spec.consent_source.as_ref().map(|source| ConsentEvent {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account,
            phone_hash: contact.phone_hash.clone(),
            phone: Some(contact.phone.clone()),
            scope: "*".into(),
            opted_out: false,
            source: Source::Import,
            evidence: serde_json::json!({"source": source, "row": row, "file": spec.file_name()}).to_string(),
            at: now,
        });
        Ok((contact, consent))
    }
}

impl Spec {
    /// The header of the column read as the number.
    fn phone_column(&self) -> &str {
        self.targets.iter().position(|t| *t == Target::Phone).map_or("phone", |i| self.header[i].as_str())
    }

    fn file_name(&self) -> String {
        Path::new(&self.file).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// Why a row was refused.
#[derive(Debug)]
struct RowFailure {
    column: Option<String>,
    code: String,
    message: String,
}

fn push_error(errors: &mut Vec<RowError>, row: u64, column: Option<&str>, code: &str, message: String) {
    if errors.len() < MAX_ERRORS {
        errors.push(RowError { row, column: column.map(str::to_string), code: code.into(), message });
    }
}

/// Whether a custom field's name is one templates can name: 1 to 64 letters, digits or underscores.
pub fn field_name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// A header as a custom field's name: runs of anything but letters and digits become one underscore, at most 64
/// characters; empty when nothing is left.
fn field_name_of(header: &str) -> String {
    let mut out = String::new();
    for c in header.chars() {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_');
    out.chars().take(64).collect::<String>().trim_end_matches('_').to_string()
}

/// A CSV cell as a custom field: `true`/`false` a boolean, a number that reads back the same a number (so
/// `00123` stays text), anything else text.
fn field_value(s: &str) -> Value {
    match s {
        "true" | "TRUE" | "True" => return Value::Bool(true),
        "false" | "FALSE" | "False" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = s.parse::<i64>()
        && n.to_string() == s
    {
        return Value::from(n);
    }
    if let Ok(f) = s.parse::<f64>()
        && f.is_finite()
        && f.to_string() == s
    {
        return Value::from(f);
    }
    Value::String(s.to_string())
}

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::invalid(code, message)
}

/// The header row of a file and the byte offset where its data starts.
fn read_header(path: &Path) -> Result<(Vec<String>, u64)> {
    let mut file = std::fs::File::open(path).map_err(|e| invalid("invalid_csv", format!("the upload: {e}")))?;
    // A byte-order mark is not part of the first header.
    let mut bom = [0u8; 3];
    let n = file.read(&mut bom).map_err(|e| invalid("invalid_csv", e.to_string()))?;
    let skip = if n == 3 && bom == [0xEF, 0xBB, 0xBF] { 3 } else { 0 };
    file.seek(SeekFrom::Start(skip)).map_err(|e| invalid("invalid_csv", e.to_string()))?;
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(file);
    let mut record = csv::StringRecord::new();
    if !reader.read_record(&mut record).map_err(|e| invalid("invalid_csv", e.to_string()))? {
        return Err(invalid("invalid_csv", "the file is empty: it needs a header row"));
    }
    let header: Vec<String> = record.iter().map(|h| h.trim().to_string()).collect();
    let mut names = HashSet::new();
    for h in &header {
        if !h.is_empty() && !names.insert(h) {
            return Err(invalid("invalid_csv", format!("the header names {h:?} twice")));
        }
    }
    Ok((header, skip + reader.position().byte()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_become_fields_of_their_type() {
        assert_eq!(field_value("true"), Value::Bool(true));
        assert_eq!(field_value("42"), Value::from(42));
        assert_eq!(field_value("00123"), Value::from("00123"));
        assert_eq!(field_value("2.5"), Value::from(2.5));
        assert_eq!(field_value("2026-01-05"), Value::from("2026-01-05"));
    }

    #[test]
    fn headers_become_merge_field_names() {
        assert_eq!(field_name_of("Next visit"), "Next_visit");
        assert_eq!(field_name_of("  plan (2024) "), "plan_2024");
        assert_eq!(field_name_of("#"), "");
        assert!(field_name_ok("next_visit") && !field_name_ok("next visit") && !field_name_ok(""));
    }

    #[test]
    fn targets_by_name() {
        assert_eq!(Target::parse("phone"), Target::Phone);
        assert_eq!(Target::parse("fields.plan"), Target::Field("plan".into()));
        assert_eq!(Target::parse("Plan"), Target::Field("Plan".into()));
        assert_eq!(Target::parse(" Phone "), Target::Phone);
        assert_eq!(Target::parse("TAGS"), Target::Tags);
        assert_eq!(Target::parse(""), Target::Ignore);
    }
}
