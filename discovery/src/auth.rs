//! ingress-nginx's authentication annotations -> the route model's [`Authentication`]:
//! basic auth (`auth-type`, `auth-secret`, `auth-secret-type`, `auth-realm`) with the
//! password file of the Secret it names, and external auth (`auth-url`, `auth-method`,
//! `auth-signin`, `auth-signin-redirect-param`, `auth-response-headers`,
//! `auth-request-redirect`).
//!
//! Fails closed: annotations that ask for authentication weir cannot set up (a missing or
//! broken Secret, a bad value, an `auth-snippet`) give [`Authentication::Unusable`], whose
//! routes answer 503, never an open route and never a dropped Ingress (its paths would fall
//! to a less specific route without auth).
//!
//! Must not: do I/O (the Secrets are the objects' ones), or put a hash in a message.

use crate::htpasswd::Htpasswd;
use crate::nginx::PREFIX;
use crate::snapshot::{Authentication, BasicAuth, ExternalAuth, ObjectRef};
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The annotations read here (names without [`PREFIX`]).
pub const KNOWN: &[&str] = &[
    "auth-method",
    "auth-realm",
    "auth-request-redirect",
    "auth-response-headers",
    "auth-secret",
    "auth-secret-type",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-type",
    "auth-url",
];

/// The variables `auth-url` and `auth-signin` may use, as ingress-nginx users write them
/// (`https://$host/oauth2/start?rd=$escaped_request_uri`); weir fills them per request.
pub const URL_VARIABLES: &[&str] = &["$host", "$scheme", "$request_uri", "$escaped_request_uri"];

/// What the annotations of one Ingress ask for (`None`: no authentication), and the
/// problems worth a warning that did not make it unusable (lines of its password file
/// weir cannot use).
pub fn read(
    annotations: Option<&BTreeMap<String, String>>,
    namespace: &str,
    secrets: &[Arc<Secret>],
) -> (Option<Authentication>, Vec<String>) {
    let get = |name: &str| {
        annotations
            .and_then(|a| a.get(&format!("{PREFIX}{name}")))
            .map(String::as_str)
    };
    if get("auth-type").is_none() && get("auth-url").is_none() {
        return (None, Vec::new());
    }
    let mut warnings = Vec::new();
    let basic = match get("auth-type") {
        None => Ok(None),
        Some(kind) => basic(kind, &get, namespace, secrets, &mut warnings).map(Some),
    };
    let external = match get("auth-url") {
        None => Ok(None),
        Some(url) => external(url, &get).map(|e| Some(Box::new(e))),
    };
    let auth = match (basic, external) {
        (Ok(basic), Ok(external)) => Authentication::Required { basic, external },
        (Err(reason), _) | (_, Err(reason)) => Authentication::Unusable(reason),
    };
    (Some(auth), warnings)
}

fn basic<'a>(
    kind: &str,
    get: &impl Fn(&str) -> Option<&'a str>,
    namespace: &str,
    secrets: &[Arc<Secret>],
    warnings: &mut Vec<String>,
) -> Result<BasicAuth, String> {
    match kind.trim() {
        "basic" => {}
        "digest" => {
            return Err(format!(
            "{PREFIX}auth-type: digest is not supported by weir (use basic over TLS, or auth-url)"
        ))
        }
        other => return Err(format!("{PREFIX}auth-type: {other:?} is not basic")),
    }
    let name = get("auth-secret")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{PREFIX}auth-type: basic needs {PREFIX}auth-secret"))?;
    // `namespace/name` only for the Ingress's own namespace: reading another namespace's
    // Secret would let an Ingress author use credentials they cannot read.
    let name = match name.split_once('/') {
        Some((ns, name)) if ns == namespace => name,
        Some((ns, _)) => {
            return Err(format!(
                "{PREFIX}auth-secret: {name:?} is in namespace {ns:?}; only Secrets of the Ingress's own namespace ({namespace:?}) are read"
            ))
        }
        None => name,
    };
    let secret_ref = ObjectRef {
        kind: "Secret",
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let realm = get("auth-realm")
        .unwrap_or("Authentication Required")
        .trim();
    if realm
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(format!(
            "{PREFIX}auth-realm: {realm:?} has a quote, backslash or control character"
        ));
    }
    let secret = secrets
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(name)
        })
        .ok_or_else(|| format!("{PREFIX}auth-secret: {secret_ref} not found"))?;
    let value = |key: &str| -> Option<Vec<u8>> {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| secret.data.as_ref()?.get(key).map(|b| b.0.clone()))
    };
    let (users, problems) = match get("auth-secret-type").map(str::trim) {
        None | Some("auth-file") => {
            let file = value("auth").ok_or_else(|| {
                format!("{PREFIX}auth-secret: {secret_ref} has no key \"auth\" (an htpasswd file)")
            })?;
            let text = String::from_utf8(file).map_err(|_| {
                format!("{PREFIX}auth-secret: {secret_ref} key \"auth\" is not UTF-8")
            })?;
            Htpasswd::parse_file(&text)
        }
        Some("auth-map") => {
            let mut entries: BTreeMap<String, String> = BTreeMap::new();
            for (user, hash) in secret.data.iter().flatten() {
                entries.insert(user.clone(), String::from_utf8_lossy(&hash.0).into_owned());
            }
            for (user, hash) in secret.string_data.iter().flatten() {
                entries.insert(user.clone(), hash.clone());
            }
            Htpasswd::from_map(entries.iter().map(|(u, h)| (u.as_str(), h.as_str())))
        }
        Some(other) => {
            return Err(format!(
                "{PREFIX}auth-secret-type: {other:?} is not auth-file or auth-map"
            ))
        }
    };
    if users.is_empty() {
        let why = if problems.is_empty() {
            "it lists no user".to_string()
        } else {
            problems.join("; ")
        };
        return Err(format!(
            "{PREFIX}auth-secret: {secret_ref} has no usable user: {why}"
        ));
    }
    warnings.extend(
        problems
            .into_iter()
            .map(|p| format!("{PREFIX}auth-secret: {secret_ref} {p}; that entry cannot log in")),
    );
    Ok(BasicAuth {
        realm: realm.to_string(),
        secret: secret_ref,
        users: Arc::new(users),
    })
}

fn external<'a>(url: &str, get: &impl Fn(&str) -> Option<&'a str>) -> Result<ExternalAuth, String> {
    if get("auth-snippet").is_some() {
        return Err(format!(
            "{PREFIX}auth-snippet is refused: weir runs no nginx configuration, and an auth check it cannot apply is not applied at all"
        ));
    }
    let url = auth_url("auth-url", url)?;
    let method = match get("auth-method").map(str::trim) {
        None => None,
        Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => {
            Some(m.to_string())
        }
        Some(m) => return Err(format!("{PREFIX}auth-method: {m:?} is not an HTTP method")),
    };
    let signin = get("auth-signin")
        .map(|s| auth_url("auth-signin", s))
        .transpose()?;
    let signin_redirect_param = match get("auth-signin-redirect-param").map(str::trim) {
        None => "rd".to_string(),
        Some(p)
            if !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            p.to_string()
        }
        Some(p) => {
            return Err(format!(
                "{PREFIX}auth-signin-redirect-param: {p:?} is not a query parameter name"
            ))
        }
    };
    let mut response_headers = Vec::new();
    for name in get("auth-response-headers")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(format!(
                "{PREFIX}auth-response-headers: {name:?} is not a field name"
            ));
        }
        response_headers.push(name.to_ascii_lowercase());
    }
    let request_redirect = get("auth-request-redirect")
        .map(|r| {
            let r = r.trim();
            if r.is_empty() || r.bytes().any(|b| b.is_ascii_control()) {
                Err(format!(
                    "{PREFIX}auth-request-redirect: {r:?} is not a field value"
                ))
            } else {
                Ok(r.to_string())
            }
        })
        .transpose()?;
    Ok(ExternalAuth {
        url,
        method,
        signin,
        signin_redirect_param,
        response_headers,
        request_redirect,
    })
}

/// An `http(s)://` URL of `auth-url` or `auth-signin`, which may use [`URL_VARIABLES`].
fn auth_url(name: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    let bad = |why: &str| format!("{PREFIX}{name}: {value:?} {why}");
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| bad("is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("has no host (or has user information)"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        return Err(bad(
            "is not visible ASCII without quotes (a URL escapes the rest)",
        ));
    }
    // Every `$` starts a variable weir knows.
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        rest = &rest[at..];
        let known = URL_VARIABLES
            .iter()
            .filter(|v| rest.starts_with(**v))
            .max_by_key(|v| v.len())
            .ok_or_else(|| {
                bad(&format!(
                    "uses a variable weir does not fill (it fills {})",
                    URL_VARIABLES.join(", ")
                ))
            })?;
        rest = &rest[known.len()..];
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    const SHA1: &str = "{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0="; // hunter2

    fn secret(name: &str, data: &[(&str, &str)]) -> Arc<Secret> {
        let mut secret = Secret::default();
        secret.metadata.namespace = Some("shop".into());
        secret.metadata.name = Some(name.into());
        secret.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        Arc::new(secret)
    }

    fn read_with(
        pairs: &[(&str, &str)],
        secrets: &[Arc<Secret>],
    ) -> (Option<Authentication>, Vec<String>) {
        let annotations: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect();
        read(Some(&annotations), "shop", secrets)
    }

    fn unusable(pairs: &[(&str, &str)], secrets: &[Arc<Secret>]) -> String {
        match read_with(pairs, secrets).0 {
            Some(Authentication::Unusable(reason)) => reason,
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    #[test]
    fn basic_auth_reads_the_secret_in_either_form() {
        let file = format!("alice:{SHA1}\nbob:plain\n");
        let secrets = [
            secret("users", &[("auth", &file)]),
            secret("map", &[("carol", SHA1)]),
        ];
        let (auth, warnings) = read_with(
            &[
                ("auth-type", "basic"),
                ("auth-secret", "users"),
                ("auth-realm", "Shop staff"),
            ],
            &secrets,
        );
        let Some(Authentication::Required {
            basic: Some(basic),
            external: None,
        }) = auth
        else {
            panic!("{auth:?}");
        };
        assert_eq!(basic.realm, "Shop staff");
        assert!(basic.users.get("alice").expect("alice").verify(b"hunter2"));
        assert_eq!(warnings.len(), 1, "bob's line: {warnings:?}");
        assert!(warnings[0].contains("user \"bob\"") && !warnings[0].contains("plain\""));
        let (auth, _) = read_with(
            &[
                ("auth-type", "basic"),
                ("auth-secret", "shop/map"),
                ("auth-secret-type", "auth-map"),
            ],
            &secrets,
        );
        let Some(Authentication::Required {
            basic: Some(basic), ..
        }) = auth
        else {
            panic!("{auth:?}");
        };
        assert_eq!(basic.realm, "Authentication Required");
        assert!(basic.users.get("carol").is_some());
    }

    #[test]
    fn auth_that_cannot_be_set_up_is_unusable_with_the_reason() {
        let secrets = [
            secret("users", &[("auth", &format!("alice:{SHA1}"))]),
            secret("empty", &[("auth", "# nobody\n")]),
            secret("wrongkey", &[("htpasswd", &format!("alice:{SHA1}"))]),
            secret("allbad", &[("auth", "alice:plain")]),
        ];
        let basic = |name: &'static str| vec![("auth-type", "basic"), ("auth-secret", name)];
        assert!(unusable(&basic("missing"), &secrets).contains("Secret shop/missing not found"));
        assert!(unusable(&basic("empty"), &secrets).contains("lists no user"));
        assert!(unusable(&basic("wrongkey"), &secrets).contains("no key \"auth\""));
        assert!(unusable(&basic("allbad"), &secrets).contains("no usable user"));
        assert!(unusable(&basic("other/users"), &secrets).contains("own namespace"));
        assert!(unusable(&[("auth-type", "basic")], &secrets).contains("needs"));
        assert!(unusable(
            &[("auth-type", "digest"), ("auth-secret", "users")],
            &secrets
        )
        .contains("digest"));
        let mut realm = basic("users");
        realm.push(("auth-realm", "a\"b"));
        assert!(unusable(&realm, &secrets).contains("auth-realm"));
        let mut kind = basic("users");
        kind.push(("auth-secret-type", "auth-ldap"));
        assert!(unusable(&kind, &secrets).contains("auth-secret-type"));
        // A good external check does not save a broken basic one.
        let mut both = basic("missing");
        both.push(("auth-url", "http://auth.shop.svc/check"));
        assert!(unusable(&both, &secrets).contains("not found"));
    }

    #[test]
    fn external_auth_reads_its_annotations_and_refuses_what_it_cannot_apply() {
        let (auth, _) = read_with(
            &[
                ("auth-url", "https://$host/oauth2/auth"),
                (
                    "auth-signin",
                    "https://$host/oauth2/start?rd=$escaped_request_uri",
                ),
                (
                    "auth-response-headers",
                    "X-Auth-Request-User, X-Auth-Request-Email",
                ),
                ("auth-method", "POST"),
            ],
            &[],
        );
        let Some(Authentication::Required {
            basic: None,
            external: Some(ext),
        }) = auth
        else {
            panic!("{auth:?}");
        };
        assert_eq!(ext.url, "https://$host/oauth2/auth");
        assert_eq!(ext.method.as_deref(), Some("POST"));
        assert_eq!(ext.signin_redirect_param, "rd");
        assert_eq!(
            ext.response_headers,
            ["x-auth-request-user", "x-auth-request-email"]
        );
        for (pairs, why) in [
            (vec![("auth-url", "ftp://auth/")], "http"),
            (vec![("auth-url", "http://a\u{fffd}/")], "visible ASCII"),
            (vec![("auth-url", "http:///check")], "no host"),
            (vec![("auth-url", "http://a/$remote_user")], "variable"),
            (
                vec![("auth-url", "http://a/"), ("auth-snippet", "return 200;")],
                "auth-snippet",
            ),
            (
                vec![("auth-url", "http://a/"), ("auth-method", "get me")],
                "auth-method",
            ),
            (
                vec![
                    ("auth-url", "http://a/"),
                    ("auth-response-headers", "X-A, X B"),
                ],
                "field name",
            ),
            (
                vec![("auth-url", "http://a/"), ("auth-signin", "/login")],
                "auth-signin",
            ),
        ] {
            let reason = unusable(&pairs, &[]);
            assert!(reason.contains(why), "{pairs:?}: {reason}");
        }
    }

    #[test]
    fn no_auth_annotation_means_no_authentication() {
        assert_eq!(read_with(&[("auth-realm", "x")], &[]).0, None);
        assert_eq!(read(None, "shop", &[]).0, None);
    }
}
