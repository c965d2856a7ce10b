//! Contacts and consent over HTTP: `/v1/contacts` (CRUD, search, consent, GDPR export and erasure, CSV import and
//! export), `/v1/jobs/{id}`, `/v1/lists`, `/v1/segments`, `/v1/opt-outs` and `/v1/settings/compliance`. Every
//! route is for the caller's own account.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smsgate_core::Timestamp;
use smsgate_core::consent::{Compliance, Source};
use smsgate_services::imports::{Mapping, RowError};
use smsgate_services::{ContactInfo, ContactPatch, ContactSpec, SegmentFilter};
use smsgate_store::{ConsentEvent, ContactList, ContactQuery, Job, OptOut, Segment};
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::json::{JsonBody, message_view, time_json};
use crate::views::{ErrorView, MessageView};
use crate::{AppState, Caller, KeyId};

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(q: QueryResult<T>) -> Result<T, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::invalid("invalid_query", e.body_text()))
}

/// A contact.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactView {
    pub id: String,
    /// E.164.
    pub phone: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// The zone texts to this contact are timed by.
    pub time_zone: Option<String>,
    /// `contact` (given), `number` (derived from the number), or `unknown`.
    pub time_zone_source: String,
    /// The number's country or area code spans several zones; the most populous was taken.
    pub time_zone_several: bool,
    /// Where the number is: a country (`GB`) or a US state or Canadian province (`US-FL`).
    pub place: Option<String>,
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    pub tags: Vec<String>,
    /// The lists it is in (ids).
    pub lists: Vec<String>,
    pub opted_out: bool,
    #[schema(value_type = String)]
    pub created_at: Value,
    #[schema(value_type = String)]
    pub updated_at: Value,
    /// The last message from the number.
    #[schema(value_type = Option<String>)]
    pub last_activity_at: Value,
}

fn contact_view(i: ContactInfo) -> ContactView {
    let c = i.contact;
    ContactView {
        id: c.id,
        phone: c.phone,
        name: c.name,
        email: c.email,
        time_zone: i.time_zone,
        time_zone_source: i.time_zone_source.into(),
        time_zone_several: i.time_zone_several,
        place: i.place,
        fields: c.fields,
        tags: c.tags,
        lists: i.lists,
        opted_out: i.opted_out,
        created_at: time_json(c.created_at),
        updated_at: time_json(c.updated_at),
        last_activity_at: c.last_activity_at.map_or(Value::Null, time_json),
    }
}

/// A page of contacts.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactPage {
    pub data: Vec<ContactView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
    /// How many contacts the segment holds (on `GET /v1/segments/{id}/contacts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

fn page(data: Vec<ContactInfo>, limit: u32, count: Option<u64>) -> ContactPage {
    let next_cursor = (data.len() == limit as usize).then(|| data.last().map(|c| c.contact.id.clone())).flatten();
    ContactPage { data: data.into_iter().map(contact_view).collect(), next_cursor, count }
}

/// `POST /v1/contacts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContactBody {
    /// E.164, or a national number in the server's default region.
    phone: String,
    name: Option<String>,
    email: Option<String>,
    /// An IANA zone such as `America/Chicago`; absent: derived from the number.
    time_zone: Option<String>,
    /// Custom fields: strings, numbers, booleans, or date/times as RFC 3339 text.
    #[schema(value_type = Option<Object>)]
    fields: Option<Map<String, Value>>,
    tags: Option<Vec<String>>,
}

impl ContactBody {
    pub(crate) fn into_spec(self) -> ContactSpec {
        ContactSpec {
            phone: self.phone,
            name: self.name,
            email: self.email,
            time_zone: self.time_zone,
            fields: self.fields.unwrap_or_default(),
            tags: self.tags.unwrap_or_default(),
        }
    }
}

/// Query of `POST /v1/contacts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateQuery {
    /// Update the contact that has this number instead of refusing with `contact_exists`.
    upsert: Option<bool>,
}

/// Create a contact; 409 `contact_exists` when the account has one with the number (unless `upsert=true`).
#[utoipa::path(post, path = "/v1/contacts", request_body = ContactBody, params(CreateQuery),
    responses((status = CREATED, body = ContactView), (status = OK, body = ContactView, description = "upserted"),
              (status = CONFLICT, body = ErrorView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn create_contact(
    State(state): State<AppState>,
    Caller(caller): Caller,
    q: QueryResult<CreateQuery>,
    JsonBody { value: body, .. }: JsonBody<ContactBody>,
) -> Result<impl IntoResponse, ApiError> {
    let q = query(q)?;
    let (created, info) = state.contacts.create(caller.id, body.into_spec(), q.upsert.unwrap_or(false)).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(contact_view(info))))
}

/// Query of `GET /v1/contacts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContactsQuery {
    /// Only contacts with this tag.
    tag: Option<String>,
    /// Only members of this list (id).
    list: Option<String>,
    /// The number, name or email contains this.
    q: Option<String>,
    /// Only contacts opted out (true) or not (false).
    opted_out: Option<bool>,
    /// 1 to 1000; default 100.
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

/// The account's contacts, by id (oldest first).
#[utoipa::path(get, path = "/v1/contacts", params(ContactsQuery), responses((status = OK, body = ContactPage)))]
pub(crate) async fn list_contacts(
    State(state): State<AppState>,
    Caller(caller): Caller,
    q: QueryResult<ContactsQuery>,
) -> Result<Json<ContactPage>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    let filter = ContactQuery {
        tags: q.tag.into_iter().collect(),
        lists: q.list.into_iter().collect(),
        q: q.q.filter(|s| !s.is_empty()),
        opted_out: q.opted_out,
        ..ContactQuery::default()
    };
    let data = state.contacts.list(caller.id, &filter, q.cursor.as_deref(), limit).await?;
    Ok(Json(page(data, limit, None)))
}

/// A contact.
#[utoipa::path(get, path = "/v1/contacts/{id}", responses((status = OK, body = ContactView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_contact(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<ContactView>, ApiError> {
    Ok(Json(contact_view(state.contacts.get(caller.id, &id).await?)))
}

/// Reads a field that may be absent (unchanged), null (cleared) or a value.
fn patch_field(body: &Map<String, Value>, name: &str) -> Result<Option<Option<String>>, ApiError> {
    match body.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(ApiError::invalid("invalid_body", format!("{name} must be a string or null"))),
    }
}

/// Change a contact: fields given replace those there (null clears); `fields` merges (a null value removes it).
#[utoipa::path(patch, path = "/v1/contacts/{id}", request_body = Object,
    responses((status = OK, body = ContactView), (status = NOT_FOUND, body = ErrorView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn update_contact(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    JsonBody { value: body, .. }: JsonBody<Map<String, Value>>,
) -> Result<Json<ContactView>, ApiError> {
    const KNOWN: [&str; 6] = ["phone", "name", "email", "time_zone", "fields", "tags"];
    if let Some(k) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::invalid("invalid_body", format!("unknown field {k:?}")));
    }
    let bad = |m: &str| ApiError::invalid("invalid_body", m.to_string());
    let patch = ContactPatch {
        phone: match body.get("phone") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(bad("phone must be a string")),
        },
        name: patch_field(&body, "name")?,
        email: patch_field(&body, "email")?,
        time_zone: patch_field(&body, "time_zone")?,
        fields: match body.get("fields") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(_) => return Err(bad("fields must be an object")),
        },
        tags: match body.get("tags") {
            None => None,
            Some(Value::Null) => Some(Vec::new()),
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|_| bad("tags must be a list of strings"))?),
        },
    };
    Ok(Json(contact_view(state.contacts.update(caller.id, &id, patch).await?)))
}

/// Delete a contact (its number's consent history stays).
#[utoipa::path(delete, path = "/v1/contacts/{id}", responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn delete_contact(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.contacts.delete(caller.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One change of a number's consent.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentView {
    pub id: String,
    /// `opt_out` or `opt_in`.
    pub change: String,
    /// `keyword`, `api`, `import` or `dashboard`.
    pub source: String,
    /// `account` (every sender of the account) or the one sender it holds for.
    pub scope: String,
    /// What shows it: the inbound message and its text, the import and row, the key used.
    #[schema(value_type = Object)]
    pub evidence: Value,
    #[schema(value_type = String)]
    pub at: Value,
}

fn consent_view(e: ConsentEvent) -> ConsentView {
    ConsentView {
        id: e.id,
        change: if e.opted_out { "opt_out" } else { "opt_in" }.into(),
        source: e.source.as_str().into(),
        scope: match e.scope.as_str() {
            "" | "*" => "account".into(),
            s => s.to_string(),
        },
        evidence: serde_json::from_str(&e.evidence).unwrap_or(Value::Null),
        at: time_json(e.at),
    }
}

/// A list of consent changes.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentList {
    pub data: Vec<ConsentView>,
}

/// A contact's consent history, oldest first.
#[utoipa::path(get, path = "/v1/contacts/{id}/consent", responses((status = OK, body = ConsentList), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn contact_consent(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<ConsentList>, ApiError> {
    let events = state.contacts.consent(caller.id, &id).await?;
    Ok(Json(ConsentList { data: events.into_iter().map(consent_view).collect() }))
}

/// Everything held about a person.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportView {
    pub contact: ContactView,
    pub consent: Vec<ConsentView>,
    /// Every message to and from the number, oldest first, with its journey.
    pub messages: Vec<MessageView>,
    #[schema(value_type = String)]
    pub exported_at: Value,
}

/// Everything held about a contact's person as JSON (GDPR articles 15 and 20); recorded in the audit log.
#[utoipa::path(get, path = "/v1/contacts/{id}/export", responses((status = OK, body = ExportView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn export_contact(
    State(state): State<AppState>,
    Caller(caller): Caller,
    axum::Extension(KeyId(key)): axum::Extension<KeyId>,
    Path(id): Path<String>,
) -> Result<Json<ExportView>, ApiError> {
    let export = state.contacts.export(caller.id, &id).await?;
    let change = smsgate_services::audit::Change {
        actor_account: Some(caller.id),
        actor_key: Some(key),
        action: "GET /v1/contacts/{id}/export".into(),
        target: format!("/v1/contacts/{id}/export"),
        status: 200,
        body: None,
    };
    state.admin.record_change(change).await?;
    Ok(Json(ExportView {
        contact: contact_view(export.contact),
        consent: export.consent.into_iter().map(consent_view).collect(),
        messages: export.messages.iter().map(|(m, e)| message_view(m, Some(e))).collect(),
        exported_at: time_json(state.messages.now()),
    }))
}

/// What an erasure did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasedView {
    pub erased: bool,
    /// Messages anonymized.
    pub messages: u64,
}

/// Erase a contact's person (GDPR article 17): the contact deleted, the number's messages anonymized (counts and
/// costs kept), an opt-out kept as a keyed hash so that it still holds.
#[utoipa::path(post, path = "/v1/contacts/{id}/erase", responses((status = OK, body = ErasedView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn erase_contact(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<ErasedView>, ApiError> {
    let messages = state.contacts.erase(caller.id, &id).await?;
    Ok(Json(ErasedView { erased: true, messages }))
}

// Import and export.

/// Query of `POST /v1/contacts/import` (the body is the CSV file).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportQuery {
    /// Column mappings, `COLUMN:TARGET` separated by commas (`Mobile:phone,Plan:fields.plan`); TARGET is `phone`,
    /// `name`, `email`, `time_zone`, `tags`, `ignore` or a custom field. Columns not named map by their header.
    map: Option<String>,
    /// A list (id or name) every imported contact joins; made when no list has the name.
    list: Option<String>,
    /// Tags every imported contact gets, separated by commas.
    tags: Option<String>,
    /// Update contacts the account has already (default true).
    update_existing: Option<bool>,
    /// The rows carry consent (people who opted in): its source, kept in each number's consent history.
    consent_source: Option<String>,
}

fn mapping_of(q: ImportQuery) -> Result<Mapping, ApiError> {
    let mut columns = std::collections::HashMap::new();
    for pair in q.map.as_deref().unwrap_or("").split(',').filter(|p| !p.trim().is_empty()) {
        let (column, target) = pair
            .rsplit_once(':')
            .ok_or_else(|| ApiError::invalid("invalid_mapping", format!("{pair:?}: write COLUMN:TARGET")))?;
        columns.insert(column.trim().to_string(), target.trim().to_string());
    }
    let tags =
        q.tags.unwrap_or_default().split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect();
    Ok(Mapping { columns, list: q.list, tags, update_existing: q.update_existing, consent_source: q.consent_source })
}

/// An import or other background job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    /// `running`, `completed` or `failed`.
    pub state: String,
    /// Rows read so far.
    pub rows: u64,
    /// How far into the file the rows read so far end (octets).
    pub bytes_read: u64,
    pub created: u64,
    pub updated: u64,
    pub skipped: u64,
    /// The first 1000 refused rows: `{row, column, code, message}` (codes such as `invalid_phone`,
    /// `duplicate_in_file`, `missing_phone`).
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<RowError>,
    #[schema(value_type = String)]
    pub created_at: Value,
    #[schema(value_type = String)]
    pub updated_at: Value,
}

fn job_view(job: Job, errors: Vec<RowError>) -> JobView {
    JobView {
        id: job.id,
        state: job.state,
        rows: job.rows,
        bytes_read: job.next_offset,
        created: job.created,
        updated: job.updated,
        skipped: job.skipped,
        errors,
        created_at: time_json(job.created_at),
        updated_at: time_json(job.updated_at),
    }
}

/// The most octets an import's file may have.
pub const MAX_IMPORT: u64 = 2 * 1024 * 1024 * 1024;

/// The most octets an import's request may have (the file and a multipart form's other parts).
pub const MAX_IMPORT_BODY: usize = MAX_IMPORT as usize + 1024 * 1024;

/// Import contacts from a CSV file (the body, `text/csv`) → 202 with a job (`GET /v1/jobs/{id}`). The file is
/// streamed to disk, not held in memory, and imported in the background; a restart resumes it.
#[utoipa::path(post, path = "/v1/contacts/import", params(ImportQuery), request_body(content = String, content_type = "text/csv"),
    responses((status = ACCEPTED, body = JobView), (status = UNSUPPORTED_MEDIA_TYPE, body = ErrorView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn import_contacts(
    State(state): State<AppState>,
    Caller(caller): Caller,
    q: QueryResult<ImportQuery>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    let mapping = mapping_of(query(q)?)?;
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let job = state.contacts.new_job_id();
    let path = state
        .contacts
        .import_file(&job)
        .ok_or_else(|| ApiError::invalid("imports_disabled", "this server takes no imports"))?;
    let mut mapping = mapping;
    let written = match media.as_str() {
        "text/csv" | "application/csv" | "text/plain" => save_upload(request.into_body(), &path).await,
        "multipart/form-data" => save_multipart(request, &state, &path, &mut mapping).await,
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the CSV file as the body (Content-Type: text/csv), or as the part \"file\" of multipart/form-data",
        )),
    };
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    match state.contacts.begin_import(caller.id, &job, mapping).await {
        Ok(record) => Ok((StatusCode::ACCEPTED, Json(job_view(record, Vec::new())))),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e.into())
        }
    }
}

/// Streams the part `file` of a multipart body to a file; a part `mapping` (JSON: `columns`, `list`, `tags`,
/// `update_existing`, `consent_source`) replaces the mapping of the query.
async fn save_multipart(
    request: Request,
    state: &AppState,
    path: &std::path::Path,
    mapping: &mut Mapping,
) -> Result<(), ApiError> {
    use axum::extract::FromRequest;
    let bad = |e: axum::extract::multipart::MultipartError| ApiError::invalid("invalid_body", e.body_text());
    let mut form = axum::extract::Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::invalid("invalid_body", e.body_text()))?;
    let mut saved = false;
    while let Some(field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("mapping") => {
                let text = field.text().await.map_err(bad)?;
                *mapping = serde_json::from_str(&text)
                    .map_err(|e| ApiError::invalid("invalid_mapping", format!("the mapping part: {e}")))?;
            }
            Some("file") => {
                let chunks = field.map(|c| c.map_err(std::io::Error::other));
                save_chunks(chunks, path).await?;
                saved = true;
            }
            _ => {}
        }
    }
    if saved { Ok(()) } else { Err(ApiError::invalid("invalid_body", "the form has no part named \"file\"")) }
}

/// Streams a body to a file, at most [`MAX_IMPORT`] octets.
async fn save_upload(body: Body, path: &std::path::Path) -> Result<(), ApiError> {
    let chunks = body.into_data_stream().map(|c| c.map_err(std::io::Error::other));
    save_chunks(chunks, path).await
}

/// Writes chunks to a file, at most [`MAX_IMPORT`] octets, synced before it returns.
async fn save_chunks(
    chunks: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>>,
    path: &std::path::Path,
) -> Result<(), ApiError> {
    let io = |e: std::io::Error| {
        tracing::error!(error = %e, "saving an upload failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the upload could not be saved")
    };
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut stream = std::pin::pin!(chunks);
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::invalid("invalid_body", format!("reading the upload: {e}")))?;
        total += chunk.len() as u64;
        if total > MAX_IMPORT {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("an import may have at most {MAX_IMPORT} octets"),
            ));
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    Ok(())
}

/// A job of the account.
#[utoipa::path(get, path = "/v1/jobs/{id}", responses((status = OK, body = JobView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let (job, errors) = state.contacts.job(caller.id, &id).await?;
    Ok(Json(job_view(job, errors)))
}

/// The account's contacts as CSV (`phone,name,email,time_zone,tags,opted_out,created_at` and one column per custom
/// field of the first page), streamed a page at a time.
#[utoipa::path(get, path = "/v1/contacts/export", responses((status = OK, content_type = "text/csv", body = String)))]
pub(crate) async fn export_contacts(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    const PAGE: u32 = 1000;
    let account = caller.id;
    let contacts = state.contacts.clone();
    let first = contacts.list(account, &ContactQuery::default(), None, PAGE).await?;
    let mut field_names: Vec<String> = Vec::new();
    for c in &first {
        for k in c.contact.fields.keys() {
            if !field_names.contains(k) {
                field_names.push(k.clone());
            }
        }
    }
    let mut header = vec!["phone", "name", "email", "time_zone", "tags", "opted_out", "created_at"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    header.extend(field_names.iter().cloned());
    let head = csv_rows(&[header]);
    let stream = futures_util::stream::unfold((Some(first), None::<String>, false), move |(pending, cursor, done)| {
        let contacts = contacts.clone();
        let field_names = field_names.clone();
        async move {
            if done {
                return None;
            }
            let page = match pending {
                Some(p) => p,
                None => match contacts.list(account, &ContactQuery::default(), cursor.as_deref(), PAGE).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "exporting contacts failed part-way");
                        return Some((Err(std::io::Error::other("export failed")), (None, None, true)));
                    }
                },
            };
            let last = page.len() < PAGE as usize;
            let next = page.last().map(|c| c.contact.id.clone());
            let rows: Vec<Vec<String>> = page
                .iter()
                .map(|i| {
                    let c = &i.contact;
                    let mut row = vec![
                        c.phone.clone(),
                        c.name.clone().unwrap_or_default(),
                        c.email.clone().unwrap_or_default(),
                        i.time_zone.clone().unwrap_or_default(),
                        c.tags.join(","),
                        i.opted_out.to_string(),
                        time_json(c.created_at).as_str().unwrap_or("").to_string(),
                    ];
                    for f in &field_names {
                        row.push(
                            c.fields
                                .get(f)
                                .map(|v| match v {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                                .unwrap_or_default(),
                        );
                    }
                    row
                })
                .collect();
            Some((Ok::<_, std::io::Error>(csv_rows(&rows)), (None, next, last)))
        }
    });
    let body =
        Body::from_stream(futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(stream));
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
        .header(header::CONTENT_DISPOSITION, "attachment; filename=\"contacts.csv\"")
        .body(body)
        .unwrap_or_default())
}

/// Rows as CSV.
pub(crate) fn csv_rows(rows: &[Vec<String>]) -> bytes::Bytes {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        let _ = w.write_record(r);
    }
    bytes::Bytes::from(w.into_inner().unwrap_or_default())
}

// Lists.

/// A list of contacts.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListView {
    pub id: String,
    pub name: String,
    pub members: u64,
    #[schema(value_type = String)]
    pub created_at: Value,
}

fn list_view(l: ContactList) -> ListView {
    ListView { id: l.id, name: l.name, members: l.members, created_at: time_json(l.created_at) }
}

/// The account's lists.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListsView {
    pub data: Vec<ListView>,
}

/// `POST /v1/lists`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListBody {
    name: String,
}

/// Create a list; 409 `list_exists` when the account has one by the name.
#[utoipa::path(post, path = "/v1/lists", request_body = ListBody,
    responses((status = CREATED, body = ListView), (status = CONFLICT, body = ErrorView)))]
pub(crate) async fn create_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<ListBody>,
) -> Result<impl IntoResponse, ApiError> {
    let list = state.contacts.create_list(caller.id, &body.name).await?;
    Ok((StatusCode::CREATED, Json(list_view(list))))
}

/// The account's lists with their member counts.
#[utoipa::path(get, path = "/v1/lists", responses((status = OK, body = ListsView)))]
pub(crate) async fn list_lists(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<ListsView>, ApiError> {
    let lists = state.contacts.lists(caller.id).await?;
    Ok(Json(ListsView { data: lists.into_iter().map(list_view).collect() }))
}

/// A list.
#[utoipa::path(get, path = "/v1/lists/{id}", responses((status = OK, body = ListView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<ListView>, ApiError> {
    Ok(Json(list_view(state.contacts.list_of(caller.id, &id).await?)))
}

/// Delete a list (not its contacts).
#[utoipa::path(delete, path = "/v1/lists/{id}", responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn delete_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.contacts.delete_list(caller.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/lists/{id}/members`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MembersBody {
    /// Contact ids of this account.
    #[serde(default)]
    contacts: Vec<String>,
    /// Numbers: a number with no contact gets one.
    #[serde(default)]
    phones: Vec<String>,
}

/// How many joined.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddedView {
    pub added: u64,
}

/// Add contacts to a list, by id or by number.
#[utoipa::path(post, path = "/v1/lists/{id}/members", request_body = MembersBody,
    responses((status = OK, body = AddedView), (status = NOT_FOUND, body = ErrorView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn add_members(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    JsonBody { value: body, .. }: JsonBody<MembersBody>,
) -> Result<Json<AddedView>, ApiError> {
    let added = state.contacts.add_members(caller.id, &id, &body.contacts, &body.phones).await?;
    Ok(Json(AddedView { added }))
}

/// Remove a contact from a list.
#[utoipa::path(delete, path = "/v1/lists/{id}/members/{contact_id}",
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, contact)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.contacts.remove_member(caller.id, &id, &contact).await?;
    Ok(StatusCode::NO_CONTENT)
}

// Segments.

/// A saved filter.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentView {
    pub id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub filter: Value,
    #[schema(value_type = String)]
    pub created_at: Value,
}

fn segment_view(s: Segment) -> SegmentView {
    SegmentView {
        id: s.id,
        name: s.name,
        filter: serde_json::from_str(&s.filter).unwrap_or(Value::Null),
        created_at: time_json(s.created_at),
    }
}

/// The account's segments.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentsView {
    pub data: Vec<SegmentView>,
}

/// `POST /v1/segments`: `filter` holds `tags`, `lists`, `not_lists` (ids), `opted_out`, `active_within_days`,
/// `inactive_for_days` and `fields` (`[{"field", "op", "value"}]`, op one of `eq`, `ne`, `gt`, `gte`, `lt`,
/// `lte`, `contains`, `exists`, `missing`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SegmentBody {
    name: String,
    #[schema(value_type = Object)]
    filter: Value,
}

/// Save a segment; it is evaluated each time it is used.
#[utoipa::path(post, path = "/v1/segments", request_body = SegmentBody,
    responses((status = CREATED, body = SegmentView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn create_segment(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<SegmentBody>,
) -> Result<impl IntoResponse, ApiError> {
    let filter: SegmentFilter =
        serde_json::from_value(body.filter).map_err(|e| ApiError::invalid("invalid_filter", format!("filter: {e}")))?;
    let segment = state.contacts.create_segment(caller.id, &body.name, filter).await?;
    Ok((StatusCode::CREATED, Json(segment_view(segment))))
}

/// The account's segments.
#[utoipa::path(get, path = "/v1/segments", responses((status = OK, body = SegmentsView)))]
pub(crate) async fn list_segments(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<SegmentsView>, ApiError> {
    let segments = state.contacts.segments(caller.id).await?;
    Ok(Json(SegmentsView { data: segments.into_iter().map(segment_view).collect() }))
}

/// A segment.
#[utoipa::path(get, path = "/v1/segments/{id}", responses((status = OK, body = SegmentView), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn get_segment(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<SegmentView>, ApiError> {
    Ok(Json(segment_view(state.contacts.segment(caller.id, &id).await?.0)))
}

/// Delete a segment.
#[utoipa::path(delete, path = "/v1/segments/{id}", responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn delete_segment(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.contacts.delete_segment(caller.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /v1/segments/{id}/contacts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// 1 to 1000; default 100.
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The contacts a segment holds now, and their `count`.
#[utoipa::path(get, path = "/v1/segments/{id}/contacts", params(PageQuery),
    responses((status = OK, body = ContactPage), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn segment_contacts(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    q: QueryResult<PageQuery>,
) -> Result<Json<ContactPage>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    let (data, count) = state.contacts.segment_contacts(caller.id, &id, q.cursor.as_deref(), limit).await?;
    Ok(Json(page(data, limit, Some(count))))
}

// Opt-outs and settings.

/// A number opted out.
#[derive(Debug, Serialize, ToSchema)]
pub struct OptOutView {
    /// E.164; null once the person was erased (the opt-out still holds, by a keyed hash).
    pub phone: Option<String>,
    /// `account`, or the one sender it holds for.
    pub scope: String,
    pub source: String,
    #[schema(value_type = String)]
    pub at: Value,
}

/// A page of opt-outs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OptOutPage {
    pub data: Vec<OptOutView>,
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/opt-outs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct OptOutQuery {
    /// 1 to 1000; default 100.
    limit: Option<u32>,
    cursor: Option<String>,
    /// Whether this number (E.164) is opted out: the answer holds it alone, or nothing.
    phone: Option<String>,
}

/// The account's opt-outs, newest first.
#[utoipa::path(get, path = "/v1/opt-outs", params(OptOutQuery), responses((status = OK, body = OptOutPage)))]
pub(crate) async fn list_opt_outs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    q: QueryResult<OptOutQuery>,
) -> Result<Json<OptOutPage>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if let Some(phone) = q.phone {
        let e164 = state.contacts.normalize_phone(&phone)?;
        let scopes = state.contacts.opt_out_scopes(caller.id, &e164).await?;
        let at = time_json(state.messages.now());
        let data = scopes
            .into_iter()
            .map(|s| OptOutView {
                phone: Some(e164.clone()),
                scope: if s.is_empty() { "account".into() } else { s },
                source: String::new(),
                at: at.clone(),
            })
            .collect();
        return Ok(Json(OptOutPage { data, next_cursor: None }));
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => {
            let (at, hash) = c.split_once('.').ok_or_else(|| ApiError::invalid("invalid_cursor", "not a cursor"))?;
            Some((
                Timestamp(at.parse().map_err(|_| ApiError::invalid("invalid_cursor", "not a cursor"))?),
                hash.to_string(),
            ))
        }
    };
    let rows: Vec<OptOut> = state.contacts.opt_outs(caller.id, before, limit).await?;
    let next_cursor =
        (rows.len() == limit as usize).then(|| rows.last().map(|o| format!("{}.{}", o.at.0, o.phone_hash))).flatten();
    let data = rows
        .into_iter()
        .map(|o| OptOutView {
            phone: o.phone,
            scope: if o.scope.is_empty() { "account".into() } else { o.scope },
            source: o.source.as_str().into(),
            at: time_json(o.at),
        })
        .collect();
    Ok(Json(OptOutPage { data, next_cursor }))
}

/// `POST /v1/opt-outs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OptOutBody {
    phone: String,
    /// Why, kept in the consent history.
    note: Option<String>,
}

/// What a change of consent did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentChangeView {
    pub phone: String,
    pub opted_out: bool,
    /// Whether the number's state changed.
    pub changed: bool,
}

/// Opt a number out of the account's texts (an operator's change, recorded as such); its waiting texts are canceled.
#[utoipa::path(post, path = "/v1/opt-outs", request_body = OptOutBody,
    responses((status = OK, body = ConsentChangeView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn create_opt_out(
    State(state): State<AppState>,
    Caller(caller): Caller,
    axum::Extension(KeyId(key)): axum::Extension<KeyId>,
    JsonBody { value: body, .. }: JsonBody<OptOutBody>,
) -> Result<Json<ConsentChangeView>, ApiError> {
    let phone = state.contacts.normalize_phone(&body.phone)?;
    let evidence = serde_json::json!({"key_id": key, "note": body.note});
    let changed = state.contacts.opt_out(caller.id, &phone, Source::Api, evidence).await?;
    Ok(Json(ConsentChangeView { phone, opted_out: true, changed }))
}

/// Opt a number back in to the account's texts, in every scope (an operator's change, recorded as such).
#[utoipa::path(delete, path = "/v1/opt-outs/{phone}",
    responses((status = OK, body = ConsentChangeView), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn delete_opt_out(
    State(state): State<AppState>,
    Caller(caller): Caller,
    axum::Extension(KeyId(key)): axum::Extension<KeyId>,
    Path(phone): Path<String>,
) -> Result<Json<ConsentChangeView>, ApiError> {
    let phone = state.contacts.normalize_phone(&phone)?;
    let evidence = serde_json::json!({"key_id": key});
    let changed = state.contacts.opt_in(caller.id, &phone, Source::Api, evidence).await?;
    Ok(Json(ConsentChangeView { phone, opted_out: false, changed }))
}

/// The account's compliance settings: keywords, replies, opt-out scope, quiet hours, retention.
#[utoipa::path(get, path = "/v1/settings/compliance", responses((status = OK, body = Object)))]
pub(crate) async fn get_compliance(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Compliance>, ApiError> {
    Ok(Json(state.contacts.compliance(caller.id).await?))
}

/// Replace the account's compliance settings; fields left out take their defaults.
#[utoipa::path(put, path = "/v1/settings/compliance", request_body = Object,
    responses((status = OK, body = Object), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn put_compliance(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody { value: body, .. }: JsonBody<Value>,
) -> Result<Json<Compliance>, ApiError> {
    let settings: Compliance =
        serde_json::from_value(body).map_err(|e| ApiError::invalid("invalid_settings", e.to_string()))?;
    state.contacts.set_compliance(caller.id, &settings).await?;
    Ok(Json(state.contacts.compliance(caller.id).await?))
}
