//! Contacts, their tags, lists and saved segments, and what erasure and retention do to the messages of a number.
//! Cold-path SQL, written once ([`Database`]).

use async_trait::async_trait;
use smsgate_core::{AccountId, Direction, MessageId, Timestamp};

use crate::Result;
use crate::schema::{chain_clause, corrupt};
use crate::sql::{Database, Row, Statement, Value, values};

/// A person an account texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: String,
    pub account_id: AccountId,
    /// E.164.
    pub phone: String,
    /// The number's keyed hash, as consent keys it.
    pub phone_hash: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// The zone the account gave; `None`: derived from the number.
    pub time_zone: Option<String>,
    /// Custom fields: a JSON object.
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub tags: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_activity_at: Option<Timestamp>,
}

/// Which of an account's contacts a query wants; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactQuery {
    /// Has every one of these tags.
    pub tags: Vec<String>,
    /// Is a member of every one of these lists (ids).
    pub lists: Vec<String>,
    /// Not a member of any of these lists.
    pub not_lists: Vec<String>,
    /// The number, name or email contains this.
    pub q: Option<String>,
    /// Opted out (in any scope) or not.
    pub opted_out: Option<bool>,
    /// Last activity at or after.
    pub active_since: Option<Timestamp>,
    /// No activity at or after (or none at all).
    pub inactive_since: Option<Timestamp>,
    /// Only these contacts (ids).
    pub ids: Option<Vec<String>>,
}

/// A named list of contacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactList {
    pub id: String,
    pub account_id: AccountId,
    pub name: String,
    pub created_at: Timestamp,
    pub members: u64,
}

/// A saved filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub id: String,
    pub account_id: AccountId,
    pub name: String,
    /// The filter, JSON.
    pub filter: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Contacts, lists and segments.
#[async_trait]
pub trait ContactStore: Send + Sync {
    /// Stores a new contact; false when the account has one with this number already.
    async fn insert_contact(&self, contact: &Contact) -> Result<bool>;

    /// Replaces a contact's fields (by id and account); false if there is none.
    async fn update_contact(&self, contact: &Contact) -> Result<bool>;

    /// An account's contact by id.
    async fn contact(&self, account: AccountId, id: &str) -> Result<Option<Contact>>;

    /// An account's contact by number (E.164).
    async fn contact_by_phone(&self, account: AccountId, phone: &str) -> Result<Option<Contact>>;

    /// An account's contacts matching `query`, by id, after `cursor`, at most `limit`.
    async fn contacts(
        &self,
        account: AccountId,
        query: &ContactQuery,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Contact>>;

    /// How many of an account's contacts match `query`.
    async fn count_contacts(&self, account: AccountId, query: &ContactQuery) -> Result<u64>;

    /// Deletes an account's contact, its tags and memberships; false if there was none.
    async fn delete_contact(&self, account: AccountId, id: &str) -> Result<bool>;

    /// Tells the store that many contacts were just added (an import), so that it plans by their number.
    async fn contacts_grew(&self) -> Result<()>;

    /// Notes activity (a message to or from the number) on the account's contact with this number, if any.
    async fn touch_contact(&self, account: AccountId, phone: &str, at: Timestamp) -> Result<()>;

    /// Creates a list; false when the account has one by this name.
    async fn insert_list(&self, list: &ContactList) -> Result<bool>;

    /// An account's lists, oldest first, with their member counts.
    async fn lists(&self, account: AccountId) -> Result<Vec<ContactList>>;

    /// An account's list by id.
    async fn list(&self, account: AccountId, id: &str) -> Result<Option<ContactList>>;

    /// Deletes an account's list and its memberships (not the contacts); false if there was none.
    async fn delete_list(&self, account: AccountId, id: &str) -> Result<bool>;

    /// Adds contacts (ids of the list's account, checked by the caller) to a list; how many were not members.
    async fn add_members(&self, list: &str, contacts: &[String], now: Timestamp) -> Result<u64>;

    /// Removes a contact from a list; false if it was not a member.
    async fn remove_member(&self, list: &str, contact: &str) -> Result<bool>;

    /// The ids of a contact's lists.
    async fn lists_of(&self, contact: &str) -> Result<Vec<String>>;

    /// For a page of contacts at once: (contact id, list id) of their memberships, and which of their number
    /// hashes are opted out (in any scope) in `account`.
    async fn memberships_and_opt_outs(
        &self,
        account: AccountId,
        contacts: &[Contact],
    ) -> Result<(Vec<(String, String)>, std::collections::HashSet<String>)>;

    async fn insert_segment(&self, segment: &Segment) -> Result<()>;

    async fn segments(&self, account: AccountId) -> Result<Vec<Segment>>;

    async fn segment(&self, account: AccountId, id: &str) -> Result<Option<Segment>>;

    /// Replaces a segment's name and filter; false if there is none.
    async fn update_segment(&self, segment: &Segment) -> Result<bool>;

    async fn delete_segment(&self, account: AccountId, id: &str) -> Result<bool>;

    /// Anonymizes every message of an account to or from `phone`: the number replaced by `replacement`, the body
    /// and the number in the journey removed; counts, statuses and prices kept. How many messages.
    async fn anonymize_messages(&self, account: AccountId, phone: &str, replacement: &str) -> Result<u64>;

    /// Looks at the next `limit` messages of an account in `direction` made before `before`, by id after `after`,
    /// and removes bodies and numbers from those that are final and not purged yet. How many it purged, and the
    /// id of the last it looked at (`None`: none was left), where the next call goes on.
    async fn purge_messages(
        &self,
        account: AccountId,
        direction: Direction,
        before: Timestamp,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<(u64, Option<MessageId>)>;
}

pub(crate) const CONTACT_COLUMNS: &str = "id, account_id, phone, phone_hash, name, email, time_zone, fields, tags, created_at, \
     updated_at, last_activity_at";

/// What a purged number reads as.
pub const PURGED: &str = "purged";

pub(crate) fn contact_of(r: &Row) -> Result<Contact> {
    let fields: String = r.get("fields")?;
    let tags: String = r.get("tags")?;
    let id: String = r.get("id")?;
    Ok(Contact {
        fields: serde_json::from_str(&fields).map_err(|e| corrupt(format!("contact {id} fields: {e}")))?,
        tags: serde_json::from_str(&tags).map_err(|e| corrupt(format!("contact {id} tags: {e}")))?,
        id,
        account_id: r.account_id("account_id")?,
        phone: r.get("phone")?,
        phone_hash: r.get("phone_hash")?,
        name: r.get("name")?,
        email: r.get("email")?,
        time_zone: r.get("time_zone")?,
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
        last_activity_at: r.get::<Option<i64>>("last_activity_at")?.map(Timestamp),
    })
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// The statement that inserts a contact, or nothing when the account has one with its number.
fn insert_statement(c: &Contact) -> Statement {
    Statement {
        sql: format!(
            "INSERT INTO contacts ({CONTACT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (account_id, phone) DO NOTHING"
        ),
        params: insert_params(c),
    }
}

/// A contact's values in the order of [`CONTACT_COLUMNS`].
fn insert_params(c: &Contact) -> Vec<Value> {
    values![
        &c.id,
        c.account_id,
        &c.phone,
        &c.phone_hash,
        c.name.as_deref(),
        c.email.as_deref(),
        c.time_zone.as_deref(),
        json(&c.fields),
        json(&c.tags),
        c.created_at,
        c.updated_at,
        c.last_activity_at.map(|t| t.0),
    ]
}

/// The statement that writes every part of a contact (by id and account).
fn update_statement(c: &Contact) -> Statement {
    Statement {
        sql: "UPDATE contacts SET phone = ?, phone_hash = ?, name = ?, email = ?, time_zone = ?, fields = ?, \
              tags = ?, updated_at = ? WHERE id = ? AND account_id = ?"
            .into(),
        params: values![
            &c.phone,
            &c.phone_hash,
            c.name.as_deref(),
            c.email.as_deref(),
            c.time_zone.as_deref(),
            json(&c.fields),
            json(&c.tags),
            c.updated_at,
            &c.id,
            c.account_id
        ],
    }
}

/// The statements that make the tag rows of the contact `id` those of `tags`. Keyed by id, and each insert only
/// while that contact exists: after an insert that found the number taken, they change nothing.
fn tag_statements(id: &str, account: AccountId, tags: &[String]) -> Vec<Statement> {
    let mut out = vec![Statement { sql: "DELETE FROM contact_tags WHERE contact_id = ?".into(), params: values![id] }];
    for tag in tags {
        out.push(Statement {
            sql: "INSERT INTO contact_tags (contact_id, account_id, tag) SELECT ?, ?, ? \
                  WHERE EXISTS (SELECT 1 FROM contacts WHERE id = ?) ON CONFLICT DO NOTHING"
                .into(),
            params: values![id, account, tag, id],
        });
    }
    out
}

/// The `WHERE` terms of a query over `contacts c`, and their parameters.
fn query_terms(account: AccountId, q: &ContactQuery) -> (String, Vec<Value>) {
    let mut sql = "c.account_id = ?".to_string();
    let mut params: Vec<Value> = values![account];
    for tag in &q.tags {
        sql.push_str(" AND EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = ?)");
        params.push(tag.into());
    }
    for list in &q.lists {
        sql.push_str(" AND EXISTS (SELECT 1 FROM list_members m WHERE m.contact_id = c.id AND m.list_id = ?)");
        params.push(list.into());
    }
    for list in &q.not_lists {
        sql.push_str(" AND NOT EXISTS (SELECT 1 FROM list_members m WHERE m.contact_id = c.id AND m.list_id = ?)");
        params.push(list.into());
    }
    if let Some(text) = &q.q {
        let like = format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        sql.push_str(
            " AND (c.phone LIKE ? ESCAPE '\\' OR LOWER(COALESCE(c.name, '')) LIKE LOWER(?) ESCAPE '\\' \
             OR LOWER(COALESCE(c.email, '')) LIKE LOWER(?) ESCAPE '\\')",
        );
        params.extend(values![&like, &like, &like]);
    }
    if let Some(out) = q.opted_out {
        sql.push_str(if out { " AND EXISTS" } else { " AND NOT EXISTS" });
        sql.push_str(" (SELECT 1 FROM opt_outs o WHERE o.account_id = c.account_id AND o.phone_hash = c.phone_hash)");
    }
    if let Some(at) = q.active_since {
        sql.push_str(" AND c.last_activity_at >= ?");
        params.push(at.into());
    }
    if let Some(at) = q.inactive_since {
        sql.push_str(" AND (c.last_activity_at IS NULL OR c.last_activity_at < ?)");
        params.push(at.into());
    }
    if let Some(ids) = &q.ids {
        if ids.is_empty() {
            sql.push_str(" AND 1 = 0");
        } else {
            sql.push_str(&format!(" AND c.id IN ({})", vec!["?"; ids.len()].join(", ")));
            params.extend(ids.iter().map(Value::from));
        }
    }
    (sql, params)
}

/// `members` is kept by the database as members join and leave (migration 0028's triggers).
const LIST_COLUMNS: &str = "l.id, l.account_id, l.name, l.created_at, l.members";

fn list_of(r: &Row) -> Result<ContactList> {
    Ok(ContactList {
        id: r.get("id")?,
        account_id: r.account_id("account_id")?,
        name: r.get("name")?,
        created_at: r.timestamp("created_at")?,
        members: u64::try_from(r.get::<i64>("members")?).unwrap_or(0),
    })
}

const SEGMENT_COLUMNS: &str = "id, account_id, name, filter, created_at, updated_at";

fn segment_of(r: &Row) -> Result<Segment> {
    Ok(Segment {
        id: r.get("id")?,
        account_id: r.account_id("account_id")?,
        name: r.get("name")?,
        filter: r.get("filter")?,
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
    })
}

/// The statements that store a batch of contacts of one account: new numbers inserted (a few multi-row
/// statements), numbers the account has already updated when `update` (what a row gives replaces what is there;
/// fields and tags it does not name are kept) or else left alone. For each contact, whether it will be created
/// (`Some(true)`), updated (`Some(false)`) or left alone (`None`, also for a number repeated in the batch).
pub(crate) async fn upsert_plan<D: Database + ?Sized>(
    db: &D,
    contacts: &[Contact],
    update: bool,
) -> Result<(Vec<Statement>, Vec<Option<bool>>)> {
    let Some(first) = contacts.first() else { return Ok((Vec::new(), Vec::new())) };
    let account = first.account_id;
    let mut existing: std::collections::HashMap<String, Contact> = std::collections::HashMap::new();
    for chunk in contacts.chunks(500) {
        let sql = format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE account_id = ? AND phone IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut params: Vec<Value> = values![account];
        params.extend(chunk.iter().map(|c| Value::from(&c.phone)));
        for r in db.query(&sql, params).await? {
            let c = contact_of(&r)?;
            existing.insert(c.phone.clone(), c);
        }
    }
    let mut statements = Vec::new();
    let mut out = Vec::with_capacity(contacts.len());
    let mut new: Vec<&Contact> = Vec::new();
    let mut changed: Vec<Contact> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for c in contacts {
        if !seen.insert(c.phone.as_str()) {
            out.push(None);
            continue;
        }
        match existing.get(&c.phone) {
            Some(old) if update => {
                let mut merged = old.clone();
                merged.name = c.name.clone().or(merged.name);
                merged.email = c.email.clone().or(merged.email);
                merged.time_zone = c.time_zone.clone().or(merged.time_zone);
                merged.fields.extend(c.fields.clone());
                for tag in &c.tags {
                    if !merged.tags.contains(tag) {
                        merged.tags.push(tag.clone());
                    }
                }
                merged.updated_at = c.updated_at;
                changed.push(merged);
                out.push(Some(false));
            }
            Some(_) => out.push(None),
            None => {
                new.push(c);
                out.push(Some(true));
            }
        }
    }
    statements.extend(bulk_insert(&new));
    statements.extend(bulk_update(&changed));
    Ok((statements, out))
}

/// Rows a multi-row statement holds, kept under both databases' limits on parameters.
const BULK_ROWS: usize = 1000;

/// Multi-row statements that insert new contacts (a number the account has meanwhile is left alone) and their tags
/// (only for contacts that exist, as [`tag_statements`]).
fn bulk_insert(new: &[&Contact]) -> Vec<Statement> {
    let mut out = Vec::new();
    for chunk in new.chunks(BULK_ROWS) {
        let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        let mut params = Vec::with_capacity(chunk.len() * 12);
        for c in chunk {
            params.extend(insert_params(c));
        }
        out.push(Statement {
            sql: format!(
                "INSERT INTO contacts ({CONTACT_COLUMNS}) VALUES {} ON CONFLICT (account_id, phone) DO NOTHING",
                vec![row; chunk.len()].join(", ")
            ),
            params,
        });
    }
    out.extend(bulk_tags(new));
    out
}

/// Multi-row statements that write contacts the store has (by id) anew, and make their tag rows theirs.
fn bulk_update(changed: &[Contact]) -> Vec<Statement> {
    let mut out = Vec::new();
    for chunk in changed.chunks(BULK_ROWS) {
        let mut params = Vec::with_capacity(chunk.len() * 7);
        for c in chunk {
            params.extend(values![
                &c.id,
                c.name.as_deref(),
                c.email.as_deref(),
                c.time_zone.as_deref(),
                json(&c.fields),
                json(&c.tags),
                c.updated_at,
            ]);
        }
        out.push(Statement {
            sql: format!(
                "UPDATE contacts SET name = v.column2, email = v.column3, time_zone = v.column4, fields = v.column5, \
                 tags = v.column6, updated_at = v.column7 FROM (VALUES {}) AS v WHERE contacts.id = v.column1",
                vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
            ),
            params,
        });
        out.push(Statement {
            sql: format!("DELETE FROM contact_tags WHERE contact_id IN ({})", vec!["?"; chunk.len()].join(", ")),
            params: chunk.iter().map(|c| Value::from(&c.id)).collect(),
        });
    }
    let refs: Vec<&Contact> = changed.iter().collect();
    out.extend(bulk_tags(&refs));
    out
}

/// Multi-row statements that add the tag rows of contacts (only for contacts that exist).
fn bulk_tags(contacts: &[&Contact]) -> Vec<Statement> {
    let mut out = Vec::new();
    let tags: Vec<(&Contact, &String)> = contacts.iter().flat_map(|c| c.tags.iter().map(move |t| (*c, t))).collect();
    for chunk in tags.chunks(BULK_ROWS) {
        let mut params = Vec::with_capacity(chunk.len() * 3);
        for (c, tag) in chunk {
            params.extend(values![&c.id, c.account_id, *tag]);
        }
        // VALUES as a table names its columns column1, column2, ... on SQLite and PostgreSQL alike.
        out.push(Statement {
            sql: format!(
                "INSERT INTO contact_tags (contact_id, account_id, tag) SELECT v.column1, v.column2, v.column3 \
                 FROM (VALUES {}) AS v WHERE EXISTS (SELECT 1 FROM contacts c WHERE c.id = v.column1) \
                 ON CONFLICT DO NOTHING",
                vec!["(?, ?, ?)"; chunk.len()].join(", ")
            ),
            params,
        });
    }
    out
}

#[async_trait]
impl<D: Database> ContactStore for D {
    async fn insert_contact(&self, c: &Contact) -> Result<bool> {
        let mut statements = vec![insert_statement(c)];
        statements.extend(tag_statements(&c.id, c.account_id, &c.tags));
        let changed = self.transaction(statements).await?;
        // The tags were written for whichever contact has the number: only a new one's are new.
        Ok(changed.first().copied().unwrap_or(0) == 1)
    }

    async fn update_contact(&self, c: &Contact) -> Result<bool> {
        let mut statements = vec![update_statement(c)];
        statements.extend(tag_statements(&c.id, c.account_id, &c.tags));
        Ok(self.transaction(statements).await?.first().copied().unwrap_or(0) == 1)
    }

    async fn contact(&self, account: AccountId, id: &str) -> Result<Option<Contact>> {
        let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE id = ? AND account_id = ?");
        self.query_one(&sql, values![id, account]).await?.as_ref().map(contact_of).transpose()
    }

    async fn contact_by_phone(&self, account: AccountId, phone: &str) -> Result<Option<Contact>> {
        let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE account_id = ? AND phone = ?");
        self.query_one(&sql, values![account, phone]).await?.as_ref().map(contact_of).transpose()
    }

    async fn contacts(
        &self,
        account: AccountId,
        query: &ContactQuery,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Contact>> {
        let (terms, mut params) = query_terms(account, query);
        let columns = CONTACT_COLUMNS.split(", ").map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", ");
        let mut sql = format!("SELECT {columns} FROM contacts c WHERE {terms}");
        if let Some(cursor) = cursor {
            sql.push_str(" AND c.id > ?");
            params.push(cursor.into());
        }
        sql.push_str(&format!(" ORDER BY c.id LIMIT {limit}"));
        self.query(&sql, params).await?.iter().map(contact_of).collect()
    }

    async fn count_contacts(&self, account: AccountId, query: &ContactQuery) -> Result<u64> {
        let (terms, params) = query_terms(account, query);
        let row = self.query_one(&format!("SELECT COUNT(*) AS n FROM contacts c WHERE {terms}"), params).await?;
        Ok(row.map(|r| r.get::<i64>("n")).transpose()?.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    async fn delete_contact(&self, account: AccountId, id: &str) -> Result<bool> {
        let owned = "(SELECT id FROM contacts WHERE id = ? AND account_id = ?)";
        let statements = vec![
            Statement {
                sql: format!("DELETE FROM contact_tags WHERE contact_id = {owned}"),
                params: values![id, account],
            },
            Statement {
                sql: format!("DELETE FROM list_members WHERE contact_id = {owned}"),
                params: values![id, account],
            },
            Statement {
                sql: "DELETE FROM contacts WHERE id = ? AND account_id = ?".into(),
                params: values![id, account],
            },
        ];
        Ok(self.transaction(statements).await?.get(2).copied().unwrap_or(0) == 1)
    }

    async fn contacts_grew(&self) -> Result<()> {
        self.analyze(&["contacts", "contact_tags", "list_members"]).await
    }

    async fn touch_contact(&self, account: AccountId, phone: &str, at: Timestamp) -> Result<()> {
        self.execute(
            "UPDATE contacts SET last_activity_at = ? WHERE account_id = ? AND phone = ? \
             AND (last_activity_at IS NULL OR last_activity_at < ?)",
            values![at, account, phone, at],
        )
        .await?;
        Ok(())
    }

    async fn insert_list(&self, l: &ContactList) -> Result<bool> {
        let n = self.execute(
            "INSERT INTO lists (id, account_id, name, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (account_id, name) DO NOTHING",
            values![&l.id, l.account_id, &l.name, l.created_at],
        );
        Ok(n.await? == 1)
    }

    async fn lists(&self, account: AccountId) -> Result<Vec<ContactList>> {
        let sql = format!("SELECT {LIST_COLUMNS} FROM lists l WHERE l.account_id = ? ORDER BY l.created_at, l.id");
        self.query(&sql, values![account]).await?.iter().map(list_of).collect()
    }

    async fn list(&self, account: AccountId, id: &str) -> Result<Option<ContactList>> {
        let sql = format!("SELECT {LIST_COLUMNS} FROM lists l WHERE l.id = ? AND l.account_id = ?");
        self.query_one(&sql, values![id, account]).await?.as_ref().map(list_of).transpose()
    }

    async fn delete_list(&self, account: AccountId, id: &str) -> Result<bool> {
        let statements = vec![
            Statement {
                sql: "DELETE FROM list_members WHERE list_id = (SELECT id FROM lists WHERE id = ? AND account_id = ?)"
                    .into(),
                params: values![id, account],
            },
            Statement { sql: "DELETE FROM lists WHERE id = ? AND account_id = ?".into(), params: values![id, account] },
        ];
        Ok(self.transaction(statements).await?.get(1).copied().unwrap_or(0) == 1)
    }

    async fn add_members(&self, list: &str, contacts: &[String], now: Timestamp) -> Result<u64> {
        let statements = contacts
            .iter()
            .map(|c| Statement {
                sql: "INSERT INTO list_members (list_id, contact_id, added_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
                    .into(),
                params: values![list, c, now],
            })
            .collect();
        Ok(self.transaction(statements).await?.iter().sum())
    }

    async fn remove_member(&self, list: &str, contact: &str) -> Result<bool> {
        let n = self.execute("DELETE FROM list_members WHERE list_id = ? AND contact_id = ?", values![list, contact]);
        Ok(n.await? == 1)
    }

    async fn lists_of(&self, contact: &str) -> Result<Vec<String>> {
        let rows =
            self.query("SELECT list_id FROM list_members WHERE contact_id = ? ORDER BY list_id", values![contact]);
        rows.await?.iter().map(|r| r.get("list_id")).collect()
    }

    async fn memberships_and_opt_outs(
        &self,
        account: AccountId,
        contacts: &[Contact],
    ) -> Result<(Vec<(String, String)>, std::collections::HashSet<String>)> {
        let (mut members, mut opted) = (Vec::new(), std::collections::HashSet::new());
        for chunk in contacts.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql =
                format!("SELECT contact_id, list_id FROM list_members WHERE contact_id IN ({marks}) ORDER BY list_id");
            for r in self.query(&sql, chunk.iter().map(|c| Value::from(&c.id)).collect()).await? {
                members.push((r.get("contact_id")?, r.get("list_id")?));
            }
            let sql =
                format!("SELECT DISTINCT phone_hash FROM opt_outs WHERE account_id = ? AND phone_hash IN ({marks})");
            let mut params: Vec<Value> = values![account];
            params.extend(chunk.iter().map(|c| Value::from(&c.phone_hash)));
            for r in self.query(&sql, params).await? {
                opted.insert(r.get("phone_hash")?);
            }
        }
        Ok((members, opted))
    }

    async fn insert_segment(&self, s: &Segment) -> Result<()> {
        self.execute(
            &format!("INSERT INTO segments ({SEGMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"),
            values![&s.id, s.account_id, &s.name, &s.filter, s.created_at, s.updated_at],
        )
        .await?;
        Ok(())
    }

    async fn segments(&self, account: AccountId) -> Result<Vec<Segment>> {
        let sql = format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE account_id = ? ORDER BY id");
        self.query(&sql, values![account]).await?.iter().map(segment_of).collect()
    }

    async fn segment(&self, account: AccountId, id: &str) -> Result<Option<Segment>> {
        let sql = format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE id = ? AND account_id = ?");
        self.query_one(&sql, values![id, account]).await?.as_ref().map(segment_of).transpose()
    }

    async fn update_segment(&self, s: &Segment) -> Result<bool> {
        let n = self.execute(
            "UPDATE segments SET name = ?, filter = ?, updated_at = ? WHERE id = ? AND account_id = ?",
            values![&s.name, &s.filter, s.updated_at, &s.id, s.account_id],
        );
        Ok(n.await? == 1)
    }

    async fn delete_segment(&self, account: AccountId, id: &str) -> Result<bool> {
        let n = self.execute("DELETE FROM segments WHERE id = ? AND account_id = ?", values![id, account]);
        Ok(n.await? == 1)
    }

    async fn anonymize_messages(&self, account: AccountId, phone: &str, replacement: &str) -> Result<u64> {
        let statements = vec![
            // What the account sent the number, through its chains (`account_id || ''` is served by no index, so
            // the chain's ids are looked up rather than every message of the account read); then the heads go.
            Statement {
                sql: format!(
                    "{}UPDATE messages SET to_addr = ?, body = '', journey = REPLACE(journey, ?, ?) \
                     WHERE id IN (SELECT id FROM chain) AND account_id || '' = ? AND to_addr = ?",
                    chain_clause(false)
                ),
                params: values![phone, account, replacement, phone, replacement, account, phone],
            },
            Statement {
                sql: "DELETE FROM recipients WHERE handset = ? AND account_id = ?".into(),
                params: values![phone, account],
            },
            Statement {
                sql: "UPDATE messages SET from_addr = ?, body = '', journey = REPLACE(journey, ?, ?) \
                      WHERE account_id = ? AND from_addr = ?"
                    .into(),
                params: values![replacement, phone, replacement, account, phone],
            },
        ];
        // The messages changed (to the number, from it), not the heads.
        let changed = self.transaction(statements).await?;
        Ok(changed[0] + changed[2])
    }

    async fn purge_messages(
        &self,
        account: AccountId,
        direction: Direction,
        before: Timestamp,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<(u64, Option<MessageId>)> {
        // A window of ids through (account_id, direction, id), so that a pass costs what it looks at, whatever
        // the history already purged behind it.
        let scope = ("account_id = ? AND direction = ? AND ", values![account, direction.as_str()]);
        let ids = crate::history::ids_made_before(self, scope, before, after, limit).await?;
        let Some(&last) = ids.last() else { return Ok((0, None)) };
        let finals = crate::history::finals();
        let number = match direction {
            Direction::Outbound => "to_addr",
            Direction::Inbound => "from_addr",
        };
        let sql = format!(
            "UPDATE messages SET body = '', {number} = '{PURGED}', journey = REPLACE(journey, {number}, '{PURGED}') \
             WHERE id IN ({}) AND status IN ({finals}) AND {number} <> '{PURGED}'",
            vec!["?"; ids.len()].join(", ")
        );
        let ids: Vec<Value> = ids.into_iter().map(Value::from).collect();
        // A chain whose newest message is purged keeps its number no longer either.
        let heads = match direction {
            Direction::Outbound => crate::history::chain_heads_among(self, &ids).await?,
            Direction::Inbound => None,
        };
        let purged = self.transaction(heads.into_iter().chain([Statement { sql, params: ids }]).collect()).await?;
        Ok((purged.last().copied().unwrap_or(0), Some(last)))
    }
}
