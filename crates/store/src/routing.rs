//! Routing configuration: connectors, routes and the one-time steps of a database. Kept in the database so that a
//! change made over the API lasts and reaches every node. Cold-path SQL, written once ([`Database`]).

use async_trait::async_trait;
use smsgate_core::Timestamp;
use smsgate_core::routing::Route;

use crate::Result;
use crate::schema::{route_json, route_of};
use crate::sql::{Database, values};

/// A connector as stored: its kind and settings (JSON, read by the code that knows the kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorRecord {
    pub name: String,
    pub kind: String,
    pub settings: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Connectors, routes and one-time steps.
#[async_trait]
pub trait RoutingStore: Send + Sync {
    /// Every connector, by name.
    async fn connectors(&self) -> Result<Vec<ConnectorRecord>>;

    /// Stores a new connector; false if one has its name.
    async fn insert_connector(&self, connector: &ConnectorRecord) -> Result<bool>;

    /// Replaces a connector's kind and settings (keeping when it was created); false if there is none by its name.
    async fn update_connector(&self, connector: &ConnectorRecord) -> Result<bool>;

    /// Deletes a connector; false if there was none.
    async fn delete_connector(&self, name: &str) -> Result<bool>;

    /// Every route, in no particular order ([`smsgate_core::routing::RoutingTable`] orders them).
    async fn routes(&self) -> Result<Vec<Route>>;

    /// Stores a new route; false if one has its name.
    async fn insert_route(&self, route: &Route, now: Timestamp) -> Result<bool>;

    /// Replaces a route; false if there is none by its name.
    async fn update_route(&self, route: &Route, now: Timestamp) -> Result<bool>;

    /// Deletes a route; false if there was none.
    async fn delete_route(&self, name: &str) -> Result<bool>;

    /// Records that the one-time step `name` is done; true if this call did it, false if it was done before (by
    /// this node or another).
    async fn do_once(&self, name: &str, now: Timestamp) -> Result<bool>;
}

#[async_trait]
impl<D: Database> RoutingStore for D {
    async fn connectors(&self) -> Result<Vec<ConnectorRecord>> {
        let rows =
            self.query("SELECT name, kind, settings, created_at, updated_at FROM connectors ORDER BY name", Vec::new());
        rows.await?
            .iter()
            .map(|r| {
                Ok(ConnectorRecord {
                    name: r.get("name")?,
                    kind: r.get("kind")?,
                    // A password that no longer opens (a lost server secret) reads empty: that connector fails to
                    // bind until it is set again, and the others go on.
                    settings: crate::seal::settings(&r.get::<String>("settings")?, |s| {
                        Ok(crate::seal::open_or_empty(s))
                    })?,
                    created_at: r.timestamp("created_at")?,
                    updated_at: r.timestamp("updated_at")?,
                })
            })
            .collect()
    }

    async fn insert_connector(&self, c: &ConnectorRecord) -> Result<bool> {
        let n = self.execute(
            "INSERT INTO connectors (name, kind, settings, created_at, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
            values![
                &c.name,
                &c.kind,
                crate::seal::settings(&c.settings, crate::seal::seal)?,
                c.created_at,
                c.updated_at
            ],
        );
        Ok(n.await? == 1)
    }

    async fn update_connector(&self, c: &ConnectorRecord) -> Result<bool> {
        let n = self.execute(
            "UPDATE connectors SET kind = ?, settings = ?, updated_at = ? WHERE name = ?",
            values![&c.kind, crate::seal::settings(&c.settings, crate::seal::seal)?, c.updated_at, &c.name],
        );
        Ok(n.await? == 1)
    }

    async fn delete_connector(&self, name: &str) -> Result<bool> {
        Ok(self.execute("DELETE FROM connectors WHERE name = ?", values![name]).await? == 1)
    }

    async fn routes(&self) -> Result<Vec<Route>> {
        let rows = self.query("SELECT name, position, matches, connectors FROM routes", Vec::new()).await?;
        rows.iter()
            .map(|r| {
                route_of(
                    r.get("name")?,
                    r.get("position")?,
                    &r.get::<String>("matches")?,
                    &r.get::<String>("connectors")?,
                )
            })
            .collect()
    }

    async fn insert_route(&self, route: &Route, now: Timestamp) -> Result<bool> {
        let (matches, connectors) = route_json(route);
        let n = self.execute(
            "INSERT INTO routes (name, position, matches, connectors, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            values![&route.name, route.position, matches, connectors, now, now],
        );
        Ok(n.await? == 1)
    }

    async fn update_route(&self, route: &Route, now: Timestamp) -> Result<bool> {
        let (matches, connectors) = route_json(route);
        let n = self.execute(
            "UPDATE routes SET position = ?, matches = ?, connectors = ?, updated_at = ? WHERE name = ?",
            values![route.position, matches, connectors, now, &route.name],
        );
        Ok(n.await? == 1)
    }

    async fn delete_route(&self, name: &str) -> Result<bool> {
        Ok(self.execute("DELETE FROM routes WHERE name = ?", values![name]).await? == 1)
    }

    async fn do_once(&self, name: &str, now: Timestamp) -> Result<bool> {
        let n =
            self.execute("INSERT INTO done_once (name, at) VALUES (?, ?) ON CONFLICT DO NOTHING", values![name, now]);
        Ok(n.await? == 1)
    }
}
