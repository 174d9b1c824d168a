//! `weir migrate`'s report: what weir would make of Ingresses written for ingress-nginx, per
//! Ingress and per `nginx.ingress.kubernetes.io/*` annotation — honoured, honoured with a
//! difference that applies here, or not supported — and of Ingresses weir would skip.
//!
//! Built from the same translation weir serves from ([`crate::translate()`]), so the report
//! and the routes cannot disagree. Pure: the caller reads the objects.
//!
//! Must not: do I/O, or judge annotations of other tools.

use crate::nginx;
use crate::objects::{meta_ref, ClusterObjects};
use crate::snapshot::ObjectRef;
use crate::translate::{translate, TranslateOptions};
use k8s_openapi::api::networking::v1::Ingress;
use std::collections::BTreeMap;
use std::fmt::Write;

/// What weir does with one annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// As ingress-nginx documents it.
    Honoured,
    /// Honoured, but a documented difference applies to this Ingress.
    Differs(String),
    /// Not implemented: the Ingress is served without it.
    NotSupported(&'static str),
    /// Its value is refused, and with it the Ingress (the report says why).
    Refused,
}

/// One annotation of one Ingress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationReport {
    pub name: String,
    pub verdict: Verdict,
}

/// One Ingress of the class weir was asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressReport {
    pub ingress: ObjectRef,
    /// Why weir would not serve it at all.
    pub skipped: Option<String>,
    /// Rules of it weir would leave out, and why.
    pub rules_left_out: Vec<String>,
    pub annotations: Vec<AnnotationReport>,
}

impl IngressReport {
    /// Whether weir would serve this Ingress differently from ingress-nginx.
    pub fn changes_behaviour(&self) -> bool {
        self.skipped.is_some()
            || self
                .annotations
                .iter()
                .any(|a| a.verdict != Verdict::Honoured)
    }
}

/// The report on every Ingress of the class, in the order weir takes them (oldest first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub ingresses: Vec<IngressReport>,
}

impl MigrationReport {
    /// Whether anything would be served differently from ingress-nginx (`weir migrate`
    /// exits non-zero then).
    pub fn changes_behaviour(&self) -> bool {
        self.ingresses.iter().any(IngressReport::changes_behaviour)
    }

    /// The report as text: one block per Ingress, then a summary line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for report in &self.ingresses {
            let state = match &report.skipped {
                Some(reason) => format!("skipped: {reason}"),
                None if report.changes_behaviour() => "served, with changes".to_string(),
                None => "served as ingress-nginx serves it".to_string(),
            };
            let ingress = &report.ingress;
            let _ = writeln!(out, "{}/{}: {state}", ingress.namespace, ingress.name);
            for rule in &report.rules_left_out {
                let _ = writeln!(out, "  rule left out: {rule}");
            }
            for annotation in &report.annotations {
                let verdict = match &annotation.verdict {
                    Verdict::Honoured => "honoured".to_string(),
                    Verdict::Differs(why) => format!("differs: {why}"),
                    Verdict::NotSupported(why) => format!("not supported: {why}"),
                    Verdict::Refused => "its value is refused (above)".to_string(),
                };
                let _ = writeln!(out, "  {}: {verdict}", annotation.name);
            }
        }
        let changed = self
            .ingresses
            .iter()
            .filter(|r| r.changes_behaviour())
            .count();
        let _ = writeln!(
            out,
            "{} Ingresses: {} served as ingress-nginx serves them, {changed} with changes{}",
            self.ingresses.len(),
            self.ingresses.len() - changed,
            if changed > 0 {
                " (docs/migrating-from-ingress-nginx.md)"
            } else {
                ""
            }
        );
        out
    }
}

/// The report on the Ingresses `opts` selects from `objects`.
pub fn report(objects: &ClusterObjects, opts: &TranslateOptions) -> MigrationReport {
    let snapshot = translate(objects, opts);
    let by_ref: BTreeMap<ObjectRef, &Ingress> = objects
        .ingresses
        .iter()
        .map(|ing| (meta_ref("Ingress", &ing.metadata), &**ing))
        .collect();
    // Served Ingresses in regex mode, and the hosts of each served Ingress's regex-able
    // paths: for ingress-nginx's host-wide regex mode.
    let served: Vec<(&ObjectRef, &Ingress)> = snapshot
        .ingresses
        .iter()
        .filter_map(|r| Some((r, *by_ref.get(r)?)))
        .collect();
    let mut reports = Vec::new();
    let skipped_refs = snapshot
        .rejected
        .iter()
        .filter(|r| r.object.kind == "Ingress");
    let mut skipped: BTreeMap<&ObjectRef, &str> = BTreeMap::new();
    let mut left_out: BTreeMap<&ObjectRef, Vec<String>> = BTreeMap::new();
    for rejection in skipped_refs {
        if snapshot.ingresses.contains(&rejection.object) {
            left_out
                .entry(&rejection.object)
                .or_default()
                .push(rejection.reason.clone());
        } else {
            skipped.insert(&rejection.object, &rejection.reason);
        }
    }
    for (ingress_ref, reason) in &skipped {
        let Some(ingress) = by_ref.get(*ingress_ref) else {
            continue;
        };
        reports.push(IngressReport {
            ingress: (*ingress_ref).clone(),
            skipped: Some(reason.to_string()),
            rules_left_out: Vec::new(),
            annotations: nginx_annotations(ingress)
                .map(|name| AnnotationReport {
                    // Reasons name the annotation as `annotation <name>: ...`.
                    verdict: if reason.contains(&format!("annotation {name}:")) {
                        Verdict::Refused
                    } else {
                        base_verdict(name)
                    },
                    name: name.to_string(),
                })
                .collect(),
        });
    }
    for (ingress_ref, ingress) in &served {
        let annotations = nginx_annotations(ingress)
            .map(|name| AnnotationReport {
                verdict: verdict(name, ingress, ingress_ref, &served),
                name: name.to_string(),
            })
            .collect();
        reports.push(IngressReport {
            ingress: (*ingress_ref).clone(),
            skipped: None,
            rules_left_out: left_out.remove(ingress_ref).unwrap_or_default(),
            annotations,
        });
    }
    // Oldest first, as weir takes them (and as it decides conflicts).
    reports.sort_by_key(|r| {
        let created = by_ref
            .get(&r.ingress)
            .and_then(|i| i.metadata.creation_timestamp.clone())
            .map(|t| t.0);
        (created, r.ingress.namespace.clone(), r.ingress.name.clone())
    });
    MigrationReport { ingresses: reports }
}

/// The Ingress's `nginx.ingress.kubernetes.io/*` annotations, in name order.
fn nginx_annotations(ingress: &Ingress) -> impl Iterator<Item = &str> {
    ingress
        .metadata
        .annotations
        .iter()
        .flat_map(|a| a.keys())
        .filter(|k| k.starts_with(nginx::PREFIX))
        .map(String::as_str)
}

/// What weir does with annotation `name` on any Ingress.
fn base_verdict(name: &str) -> Verdict {
    let short = name.strip_prefix(nginx::PREFIX).unwrap_or(name);
    if crate::annotations::nginx_is_read(short) {
        Verdict::Honoured
    } else if short.ends_with("-snippet") || short == "configuration-snippet" {
        Verdict::NotSupported("never: raw nginx configuration (refused by design)")
    } else {
        Verdict::NotSupported("not yet; the Ingress is served without it")
    }
}

/// What weir does with annotation `name` on this served Ingress: the base verdict, or a
/// documented difference that applies to it.
fn verdict(
    name: &str,
    ingress: &Ingress,
    ingress_ref: &ObjectRef,
    served: &[(&ObjectRef, &Ingress)],
) -> Verdict {
    let base = base_verdict(name);
    if base != Verdict::Honoured {
        return base;
    }
    let short = name.strip_prefix(nginx::PREFIX).unwrap_or(name);
    let annotations = ingress.metadata.annotations.as_ref();
    match short {
        "use-regex" | "rewrite-target" if regex_mode(ingress) => {
            // ingress-nginx matches every Ingress of the host as regexes; weir only this one.
            let hosts = hosts_of(ingress);
            let others: Vec<String> = served
                .iter()
                .filter(|(other_ref, other)| {
                    *other_ref != ingress_ref
                        && !regex_mode(other)
                        && hosts_of(other).iter().any(|h| hosts.contains(h))
                })
                .map(|(other_ref, _)| format!("{}/{}", other_ref.namespace, other_ref.name))
                .collect();
            if others.is_empty() {
                base
            } else {
                Verdict::Differs(format!(
                    "ingress-nginx would also match the paths of Ingress {} (same host) as case-insensitive regular expressions; weir matches them as written (annotate them with use-regex)",
                    others.join(", ")
                ))
            }
        }
        // Clients over a limit get another status than ingress-nginx gives them.
        "limit-rps" | "limit-rpm" | "limit-connections" => Verdict::Differs(
            "a client over the limit gets 429 (with Retry-After for a rate), where ingress-nginx answers 503".to_string(),
        ),
        // A Secret of another namespace: ingress-nginx reads it, weir refuses (fails closed).
        "auth-secret"
            if annotations
                .and_then(|a| a.get(name))
                .and_then(|v| v.split_once('/'))
                .is_some_and(|(ns, _)| ns != ingress_ref.namespace) =>
        {
            Verdict::Differs(
                "weir reads only Secrets of the Ingress's own namespace; this one is refused and the routes answer 503 until the Secret is copied here".to_string(),
            )
        }
        _ => match nginx::weir_equivalent(short)
            .and_then(|weir| Some((weir, annotations?.get(weir)?)))
        {
            Some((weir, value)) => {
                Verdict::Differs(format!("{weir}: {value:?} is set too, and wins"))
            }
            None => base,
        },
    }
}

fn regex_mode(ingress: &Ingress) -> bool {
    nginx::read(ingress.metadata.annotations.as_ref()).is_ok_and(|n| n.regex_paths)
}

fn hosts_of(ingress: &Ingress) -> Vec<String> {
    ingress
        .spec
        .iter()
        .flat_map(|s| s.rules.iter().flatten())
        .map(|r| r.host.clone().unwrap_or_default().to_ascii_lowercase())
        .collect()
}
