//! Routing: which connector carries a message. Routes are kept in order; the first whose match fits the message
//! wins (the route named [`DEFAULT_ROUTE`] always comes last). Within the route: the connectors that are up, then the
//! lowest priority number, then the cheapest price (least-cost routing), then a spread by weight. Pure: health and
//! the random draw come in as arguments, and [`RoutingTable::resolve`] says why it chose what it chose.

use serde::{Deserialize, Serialize};

use crate::message::AccountId;

/// The zero-config route to the built-in network: last whatever its position, so it catches only what no other
/// route matches.
pub const DEFAULT_ROUTE: &str = "default";

/// What a route matches; every field given must fit, and an empty match fits everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// The destination (E.164, with its `+`) starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The destination's country, ISO 3166 alpha-2 (`GB`, `US`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// The sender, exactly (letters in any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The sending account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
}

/// A connector a route may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTarget {
    /// The connector's name.
    pub name: String,
    /// Lower is preferred; the next priority is used only when none of this one is up.
    pub priority: u32,
    /// The share of traffic among connectors of the same priority and price.
    pub weight: u32,
    /// What one segment costs through it, in millionths of the currency unit.
    pub price_micros: Option<i64>,
}

/// A named route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub name: String,
    /// Its place in the order: routes are tried by position, then name.
    pub position: i64,
    pub matches: RouteMatch,
    pub connectors: Vec<RouteTarget>,
}

/// A message, as routing sees it.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// E.164.
    pub to: &'a str,
    pub from: &'a str,
    pub account: AccountId,
    /// The destination's country (ISO alpha-2), when known; looked at only by routes that match on country.
    pub country: Option<&'a str>,
}

/// What routing decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send through `connector`, the route's choice.
    Connector { route: String, connector: String, price_micros: Option<i64> },
    /// The route matched, but none of its connectors is up now: try again later.
    Unavailable { route: String },
    /// No route matches: the message cannot be sent.
    NoRoute,
}

/// A decision and the reasons for it, in the order they were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub decision: Decision,
    pub why: Vec<String>,
}

/// The routes in force, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    routes: Vec<Route>,
}

impl RoutingTable {
    /// The table of `routes`, put in order: by position and name, the default route last.
    pub fn new(mut routes: Vec<Route>) -> RoutingTable {
        routes.sort_by(|a, b| {
            let last = |r: &Route| r.name == DEFAULT_ROUTE;
            (last(a), a.position, &a.name).cmp(&(last(b), b.position, &b.name))
        });
        RoutingTable { routes }
    }

    /// The routes in the order they are tried.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Whether some route matches on country (so the caller knows whether to look the country up).
    pub fn uses_country(&self) -> bool {
        self.routes.iter().any(|r| r.matches.country.is_some())
    }

    /// Chooses the connector for `dest`. `allowed` limits the routes to those names (an account restricted to
    /// named routes); `is_up` says whether a connector can take traffic now; `avoid` is a connector to pass over
    /// when another of the same route is up (the one whose temporary error made this a retry); `draw` is a
    /// number in `[0, 1)` for the spread by weight.
    pub fn resolve(
        &self,
        dest: &Destination<'_>,
        allowed: Option<&[String]>,
        is_up: impl Fn(&str) -> bool,
        avoid: Option<&str>,
        draw: f64,
    ) -> Resolution {
        let mut why = Vec::new();
        for route in &self.routes {
            if let Some(allowed) = allowed
                && !allowed.iter().any(|a| a == &route.name)
            {
                why.push(format!("route {:?}: not among the account's routes", route.name));
                continue;
            }
            if let Some(miss) = mismatch(&route.matches, dest) {
                why.push(format!("route {:?}: {miss}", route.name));
                continue;
            }
            why.push(format!("route {:?} matches", route.name));
            let decision = choose(route, &is_up, avoid, draw, &mut why);
            return Resolution { decision, why };
        }
        why.push("no route matches".to_string());
        Resolution { decision: Decision::NoRoute, why }
    }
}

/// Why a match does not fit, or `None` when it does.
fn mismatch(m: &RouteMatch, dest: &Destination<'_>) -> Option<String> {
    if let Some(prefix) = &m.prefix {
        let prefix = prefix.strip_prefix('+').unwrap_or(prefix);
        if !dest.to.strip_prefix('+').unwrap_or(dest.to).starts_with(prefix) {
            return Some(format!("{} does not start with +{prefix}", dest.to));
        }
    }
    if let Some(country) = &m.country
        && !dest.country.is_some_and(|c| c.eq_ignore_ascii_case(country))
    {
        return Some(format!("{} is not in {country} ({})", dest.to, dest.country.unwrap_or("unknown country")));
    }
    if let Some(sender) = &m.sender
        && !sender.eq_ignore_ascii_case(dest.from)
    {
        return Some(format!("sender {} is not {sender}", dest.from));
    }
    if let Some(account) = m.account
        && account != dest.account
    {
        return Some(format!("account {} is not {account}", dest.account));
    }
    None
}

/// The connector of a matching route: up, then lowest priority, then cheapest, then by weight.
fn choose(
    route: &Route,
    is_up: &impl Fn(&str) -> bool,
    avoid: Option<&str>,
    draw: f64,
    why: &mut Vec<String>,
) -> Decision {
    // Each connector is asked once: asking may hand out a probe of one that was down.
    let mut candidates = Vec::with_capacity(route.connectors.len());
    for t in &route.connectors {
        if is_up(&t.name) {
            candidates.push(t);
        } else {
            why.push(format!("connector {:?} is down", t.name));
        }
    }
    if let Some(avoid) = avoid
        && candidates.iter().any(|t| t.name != avoid)
        && candidates.iter().any(|t| t.name == avoid)
    {
        candidates.retain(|t| t.name != avoid);
        why.push(format!("connector {avoid:?} passed over: its last attempt failed"));
    }
    let Some(best) = candidates.iter().map(|t| t.priority).min() else {
        why.push(format!("no connector of route {:?} is up", route.name));
        return Decision::Unavailable { route: route.name.clone() };
    };
    candidates.retain(|t| t.priority == best);
    let cheapest = candidates.iter().map(|t| t.price_micros.unwrap_or(0)).min().unwrap_or(0);
    candidates.retain(|t| t.price_micros.unwrap_or(0) == cheapest);
    why.push(format!("priority {best}, price {}: {}", cheapest as f64 / 1_000_000.0, names(&candidates)));
    let total: u64 = candidates.iter().map(|t| u64::from(t.weight)).sum();
    let chosen = if total == 0 {
        candidates[0]
    } else {
        // The draw falls in one connector's share of the total weight.
        let point = (draw.clamp(0.0, 1.0) * total as f64) as u64;
        let mut acc = 0;
        candidates
            .iter()
            .find(|t| {
                acc += u64::from(t.weight);
                point < acc
            })
            .copied()
            .unwrap_or(candidates[candidates.len() - 1])
    };
    if candidates.len() > 1 {
        why.push(format!("weight {} of {total}: {:?}", chosen.weight, chosen.name));
    }
    Decision::Connector { route: route.name.clone(), connector: chosen.name.clone(), price_micros: chosen.price_micros }
}

fn names(targets: &[&RouteTarget]) -> String {
    targets.iter().map(|t| format!("{:?}", t.name)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, priority: u32, weight: u32, price: Option<i64>) -> RouteTarget {
        RouteTarget { name: name.into(), priority, weight, price_micros: price }
    }

    fn route(name: &str, position: i64, matches: RouteMatch, connectors: Vec<RouteTarget>) -> Route {
        Route { name: name.into(), position, matches, connectors }
    }

    fn dest<'a>(to: &'a str, from: &'a str, account: AccountId, country: Option<&'a str>) -> Destination<'a> {
        Destination { to, from, account, country }
    }

    fn connector(r: &Resolution) -> &str {
        match &r.decision {
            Decision::Connector { connector, .. } => connector,
            other => panic!("no connector: {other:?} ({:?})", r.why),
        }
    }

    #[test]
    fn first_matching_route_wins_and_default_comes_last() {
        let vip = AccountId::generate();
        let table = RoutingTable::new(vec![
            route(DEFAULT_ROUTE, -10, RouteMatch::default(), vec![target("sim", 0, 1, None)]),
            route(
                "uk",
                2,
                RouteMatch { prefix: Some("+44".into()), ..Default::default() },
                vec![target("uk", 0, 1, None)],
            ),
            route(
                "us",
                3,
                RouteMatch { country: Some("us".into()), ..Default::default() },
                vec![target("us", 0, 1, None)],
            ),
            route(
                "bank",
                1,
                RouteMatch { sender: Some("BANK".into()), ..Default::default() },
                vec![target("otp", 0, 1, None)],
            ),
            route("vip", 0, RouteMatch { account: Some(vip), ..Default::default() }, vec![target("gold", 0, 1, None)]),
        ]);
        let names: Vec<&str> = table.routes().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["vip", "bank", "uk", "us", DEFAULT_ROUTE]);
        let other = AccountId::generate();
        let up = |_: &str| true;
        let pick = |d: Destination<'_>| table.resolve(&d, None, up, None, 0.5);
        assert_eq!(connector(&pick(dest("+447700900123", "Acme", other, Some("GB")))), "uk");
        assert_eq!(connector(&pick(dest("+447700900123", "Bank", other, Some("GB")))), "otp");
        assert_eq!(connector(&pick(dest("+447700900123", "Bank", vip, Some("GB")))), "gold");
        assert_eq!(connector(&pick(dest("+14155550123", "Acme", other, Some("US")))), "us");
        assert_eq!(connector(&pick(dest("+4915112345678", "Acme", other, Some("DE")))), "sim");
        // An account restricted to named routes sees only those.
        let only_us = ["us".to_string()];
        let r = table.resolve(&dest("+447700900123", "Acme", other, Some("GB")), Some(&only_us), up, None, 0.5);
        assert_eq!(r.decision, Decision::NoRoute);
        assert!(r.why.iter().any(|w| w.contains("not among the account's routes")), "{:?}", r.why);
    }

    #[test]
    fn priorities_then_price_then_weight() {
        let table = RoutingTable::new(vec![route(
            "all",
            0,
            RouteMatch::default(),
            vec![
                target("backup", 2, 1, Some(1_000)),
                target("dear", 1, 1, Some(9_000)),
                target("cheap", 1, 1, Some(5_000)),
            ],
        )]);
        let d = dest("+447700900123", "Acme", AccountId::generate(), None);
        let r = table.resolve(&d, None, |_| true, None, 0.0);
        assert_eq!(
            r.decision,
            Decision::Connector { route: "all".into(), connector: "cheap".into(), price_micros: Some(5_000) }
        );
        // The cheap one down: the dearer of the same priority, before a cheaper one of the next priority.
        let r = table.resolve(&d, None, |c| c != "cheap", None, 0.0);
        assert_eq!(connector(&r), "dear");
        assert!(r.why.iter().any(|w| w == "connector \"cheap\" is down"), "{:?}", r.why);
        // Priority 1 down: the next priority.
        assert_eq!(connector(&table.resolve(&d, None, |c| c == "backup", None, 0.0)), "backup");
        // Nothing up: later.
        let r = table.resolve(&d, None, |_| false, None, 0.0);
        assert_eq!(r.decision, Decision::Unavailable { route: "all".into() });
        // A retry passes over the connector that failed it while another is up.
        assert_eq!(connector(&table.resolve(&d, None, |_| true, Some("cheap"), 0.0)), "dear");
        assert_eq!(connector(&table.resolve(&d, None, |c| c == "cheap", Some("cheap"), 0.0)), "cheap");
    }

    #[test]
    fn weights_spread_traffic() {
        let table = RoutingTable::new(vec![route(
            "spread",
            0,
            RouteMatch::default(),
            vec![target("a", 0, 1, None), target("b", 0, 3, None), target("never", 0, 0, None)],
        )]);
        let d = dest("+447700900123", "Acme", AccountId::generate(), None);
        let (mut a, mut b) = (0, 0);
        for i in 0..10_000 {
            // Evenly spread draws, as message ids give.
            match connector(&table.resolve(&d, None, |_| true, None, (i as f64 + 0.5) / 10_000.0)) {
                "a" => a += 1,
                "b" => b += 1,
                other => panic!("{other} has weight 0"),
            }
        }
        assert_eq!((a, b), (2_500, 7_500));
    }

    #[test]
    fn no_match_explains_each_route() {
        let table = RoutingTable::new(vec![route(
            "uk",
            0,
            RouteMatch { prefix: Some("44".into()), country: Some("GB".into()), ..Default::default() },
            vec![target("uk", 0, 1, None)],
        )]);
        let r = table.resolve(&dest("+14155550123", "Acme", AccountId::generate(), None), None, |_| true, None, 0.1);
        assert_eq!(r.decision, Decision::NoRoute);
        assert_eq!(r.why, ["route \"uk\": +14155550123 does not start with +44", "no route matches"]);
        let r = table.resolve(&dest("+447700900123", "Acme", AccountId::generate(), None), None, |_| true, None, 0.1);
        assert_eq!(r.why[0], "route \"uk\": +447700900123 is not in GB (unknown country)");
    }
}
