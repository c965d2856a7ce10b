//! Message templates: a body with merge fields, per account. Cold-path SQL, written once ([`Database`]).

use async_trait::async_trait;
use smsgate_core::consent::Category;
use smsgate_core::{AccountId, Timestamp};

use crate::Result;
use crate::schema::corrupt;
use crate::sql::{Database, Row, values};

/// A template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub id: String,
    pub account_id: AccountId,
    pub name: String,
    pub body: String,
    pub category: Category,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Templates.
#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Stores a new template; false when the account has one by this name.
    async fn insert_template(&self, template: &Template) -> Result<bool>;

    /// An account's template by id.
    async fn template(&self, account: AccountId, id: &str) -> Result<Option<Template>>;

    /// An account's templates, by name.
    async fn templates(&self, account: AccountId) -> Result<Vec<Template>>;

    /// Replaces a template's name, body and category (by id and account); `None` if there is none, `Some(false)`
    /// when the new name is another template's.
    async fn update_template(&self, template: &Template) -> Result<Option<bool>>;

    /// Deletes an account's template; false if there was none.
    async fn delete_template(&self, account: AccountId, id: &str) -> Result<bool>;
}

const COLUMNS: &str = "id, account_id, name, body, category, created_at, updated_at";

fn template_of(r: &Row) -> Result<Template> {
    let category: String = r.get("category")?;
    Ok(Template {
        id: r.get("id")?,
        account_id: r.account_id("account_id")?,
        name: r.get("name")?,
        body: r.get("body")?,
        category: Category::parse(&category).ok_or_else(|| corrupt(format!("template category {category:?}")))?,
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
    })
}

#[async_trait]
impl<D: Database> TemplateStore for D {
    async fn insert_template(&self, t: &Template) -> Result<bool> {
        let sql = format!(
            "INSERT INTO templates ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, name) DO NOTHING"
        );
        let params = values![&t.id, t.account_id, &t.name, &t.body, t.category.as_str(), t.created_at, t.updated_at];
        Ok(self.execute(&sql, params).await? == 1)
    }

    async fn template(&self, account: AccountId, id: &str) -> Result<Option<Template>> {
        let sql = format!("SELECT {COLUMNS} FROM templates WHERE id = ? AND account_id = ?");
        self.query_one(&sql, values![id, account]).await?.as_ref().map(template_of).transpose()
    }

    async fn templates(&self, account: AccountId) -> Result<Vec<Template>> {
        let sql = format!("SELECT {COLUMNS} FROM templates WHERE account_id = ? ORDER BY name, id");
        self.query(&sql, values![account]).await?.iter().map(template_of).collect()
    }

    async fn update_template(&self, t: &Template) -> Result<Option<bool>> {
        let taken = self
            .query_one(
                "SELECT id FROM templates WHERE account_id = ? AND name = ? AND id <> ?",
                values![t.account_id, &t.name, &t.id],
            )
            .await?;
        if taken.is_some() {
            return Ok(Some(false));
        }
        let n = self.execute(
            "UPDATE templates SET name = ?, body = ?, category = ?, updated_at = ? WHERE id = ? AND account_id = ?",
            values![&t.name, &t.body, t.category.as_str(), t.updated_at, &t.id, t.account_id],
        );
        Ok((n.await? == 1).then_some(true))
    }

    async fn delete_template(&self, account: AccountId, id: &str) -> Result<bool> {
        Ok(self.execute("DELETE FROM templates WHERE id = ? AND account_id = ?", values![id, account]).await? == 1)
    }
}
