//! Who may drive the local dashboard server: only the page `hmctl dashboard` opened.
//!
//! The server listens on 127.0.0.1 only, yet other local users, and any web page the
//! user's browser shows, can reach 127.0.0.1 too. So every request must:
//! - name this server in its `Host` header (`127.0.0.1:PORT` or `localhost:PORT`):
//!   a page on another name that DNS-rebinds to 127.0.0.1 is refused;
//! - carry the per-launch token, as `?token=` on the first visit (the URL hmctl
//!   prints), then as an `HttpOnly`, `SameSite=Strict` cookie named after the port;
//! - for writes (POST), also come from this origin (`Origin` header) with a JSON body,
//!   which a cross-site form cannot send.
//!
//! No CORS headers are ever sent, so other origins cannot read answers either.

use hyper::header::{COOKIE, HOST, HeaderMap, HeaderValue, ORIGIN};
use rand::RngCore;

/// Why a request was refused (the status and a short text for the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` names something else (DNS rebinding) or is missing.
    WrongHost,
    /// Neither the cookie nor `?token=` carries the launch token.
    NoToken,
    /// A write from another origin, or without a JSON body.
    CrossOrigin,
}

impl Refusal {
    /// The HTTP status to answer with.
    pub fn status(self) -> hyper::StatusCode {
        match self {
            Refusal::WrongHost => hyper::StatusCode::MISDIRECTED_REQUEST,
            Refusal::NoToken | Refusal::CrossOrigin => hyper::StatusCode::FORBIDDEN,
        }
    }

    /// What the body says.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::WrongHost => "this server answers to 127.0.0.1 and localhost only\n",
            Refusal::NoToken => {
                "missing or wrong dashboard token: open the URL `hmctl dashboard` printed\n"
            }
            Refusal::CrossOrigin => "writes must come from the dashboard page itself\n",
        }
    }
}

/// The launch token and the port it is valid for.
#[derive(Debug, Clone)]
pub struct Guard {
    token: String,
    port: u16,
}

/// Equal strings, compared in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Guard {
    /// A fresh random token (256 bits, hex) for a server on `port`.
    pub fn new(port: u16) -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Guard { token, port }
    }

    /// The URL to open: the page with the token.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/?token={}", self.port, self.token)
    }

    /// The cookie's name; cookies are not separated by port, so it names the port.
    pub fn cookie_name(&self) -> String {
        format!("hm_dashboard_{}", self.port)
    }

    /// The `Set-Cookie` header that lets the page's later requests through.
    pub fn set_cookie(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie_name(),
            self.token
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// True when `host` is this server's `127.0.0.1:PORT` or `localhost:PORT`.
    pub fn host_ok(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let port = self.port.to_string();
        matches!(host.rsplit_once(':'), Some((name, p))
            if p == port && (name == "127.0.0.1" || name.eq_ignore_ascii_case("localhost")))
    }

    /// True when `?token=` in `query` is the launch token.
    pub fn query_token_ok(&self, query: Option<&str>) -> bool {
        query.is_some_and(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .any(|(k, v)| k == "token" && same(v.as_bytes(), self.token.as_bytes()))
        })
    }

    /// True when a `Cookie` header carries the launch token under [`Guard::cookie_name`].
    pub fn cookie_ok(&self, headers: &HeaderMap) -> bool {
        let name = self.cookie_name();
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(k, v)| k == name && same(v.as_bytes(), self.token.as_bytes()))
    }

    /// Checks a request: host, then token (cookie or query), then, for writes, origin.
    pub fn check(
        &self,
        method: &hyper::Method,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<(), Refusal> {
        if !self.host_ok(headers) {
            return Err(Refusal::WrongHost);
        }
        if !self.cookie_ok(headers) && !self.query_token_ok(query) {
            return Err(Refusal::NoToken);
        }
        if method != hyper::Method::GET && method != hyper::Method::HEAD {
            let host = headers.get(HOST).and_then(|h| h.to_str().ok());
            let origin = headers.get(ORIGIN).and_then(|o| o.to_str().ok());
            let json = headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .is_some_and(|c| c.starts_with("application/json"));
            let same_origin =
                matches!((origin, host), (Some(o), Some(h)) if o == format!("http://{h}"));
            if !same_origin || !json {
                return Err(Refusal::CrossOrigin);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn only_this_host_with_the_token_gets_in() {
        let guard = Guard::new(8001);
        let token = guard.token.clone();
        let cookie = format!("other=1; hm_dashboard_8001={token}");
        let ok = headers(&[("host", "127.0.0.1:8001"), ("cookie", &cookie)]);
        assert_eq!(guard.check(&Method::GET, &ok, None), Ok(()));
        let local = headers(&[("host", "localhost:8001")]);
        assert_eq!(
            guard.check(&Method::GET, &local, Some(&format!("a=b&token={token}"))),
            Ok(())
        );
        assert_eq!(
            guard.check(&Method::GET, &local, Some("token=00")),
            Err(Refusal::NoToken)
        );
        let rebound = headers(&[("host", "evil.example:8001"), ("cookie", &cookie)]);
        assert_eq!(
            guard.check(&Method::GET, &rebound, None),
            Err(Refusal::WrongHost)
        );
        let other_port = headers(&[("host", "127.0.0.1:8002"), ("cookie", &cookie)]);
        assert_eq!(
            guard.check(&Method::GET, &other_port, None),
            Err(Refusal::WrongHost)
        );
        let wrong_cookie = headers(&[
            ("host", "127.0.0.1:8001"),
            ("cookie", "hm_dashboard_8002=x"),
        ]);
        assert_eq!(
            guard.check(&Method::GET, &wrong_cookie, None),
            Err(Refusal::NoToken)
        );
    }

    #[test]
    fn writes_need_this_origin_and_json() {
        let guard = Guard::new(8001);
        let cookie = format!("hm_dashboard_8001={}", guard.token);
        let base = [("host", "127.0.0.1:8001"), ("cookie", cookie.as_str())];
        let write = |extra: &[(&'static str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            guard.check(&Method::POST, &headers(&all), None)
        };
        assert_eq!(
            write(&[
                ("origin", "http://127.0.0.1:8001"),
                ("content-type", "application/json")
            ]),
            Ok(())
        );
        assert_eq!(
            write(&[
                ("origin", "http://evil.example"),
                ("content-type", "application/json")
            ]),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(
            write(&[
                ("origin", "http://127.0.0.1:8001"),
                ("content-type", "application/x-www-form-urlencoded")
            ]),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(
            write(&[("content-type", "application/json")]),
            Err(Refusal::CrossOrigin)
        );
    }
}
