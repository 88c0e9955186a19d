//! Per-tool policy: which caller may see and use which tool, resource and
//! prompt.
//!
//! The `[policy]` table of the configuration ([`PolicyConfig`]) is compiled
//! into a [`Policy`]: rules in order, the first whose name patterns match
//! decides; a rule lets a caller through when every requirement category it
//! names (scopes, app roles, groups, tenants) is met by at least one value,
//! or refuses outright (`deny = true`). Names no rule matches follow
//! `default`.
//!
//! A refusal says whether more scope would help: when scopes are the only
//! unmet requirement of a delegated token, [`Denial::step_up_scopes`] names
//! them, and the endpoint answers 403 `insufficient_scope` so that a
//! compliant client can ask for them; otherwise it answers a JSON-RPC error.
//!
//! Resource rules match the URI as the client wrote it, case-sensitively.
//! A URI with `.` or `..` path segments (also percent-encoded) is refused
//! whenever the policy has resource rules, since the upstream might resolve
//! `file:///public/../secret/x` to a name a rule guards; other spellings an
//! upstream may treat as equal (case of scheme or host, percent-encoding)
//! are not caught, so guard resources with `default = "deny"` and rules
//! that allow.
//!
//! The policy in force lives in a [`PolicyHandle`], swapped whole on reload
//! and read without a lock on every call.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};
use mcpgate_token::{Principal, TokenKind};
use serde::Deserialize;

/// What a name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A tool (`tools/list`, `tools/call`).
    Tool,
    /// A resource, by URI (`resources/list`, `resources/read`).
    Resource,
    /// A prompt (`prompts/list`, `prompts/get`).
    Prompt,
}

impl Kind {
    /// The word for it in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Resource => "resource",
            Kind::Prompt => "prompt",
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::Tool => 0,
            Kind::Resource => 1,
            Kind::Prompt => 2,
        }
    }
}

/// What happens to a name no rule matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Let every caller use it (the default: a gateway with no rules
    /// changes nothing).
    #[default]
    Allow,
    /// Refuse it.
    Deny,
}

/// The `[policy]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Names no rule matches. Default: allow.
    #[serde(default)]
    pub default: DefaultAction,
    /// Rules, first match decides. Default: none.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// One `[[policy.rules]]` entry. Name patterns are exact or glob (`*`, `?`,
/// `[a-z]`, `{a,b}`; `*` also matches `/`), on names as the client sees
/// them. Requirement lists are "any one of these"; an empty or absent list
/// requires nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Shown in refusals and audit. Default: `policy.rules[N]`.
    #[serde(default)]
    pub name: Option<String>,
    /// Tool names this rule governs.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Resource URIs this rule governs.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Prompt names this rule governs.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// Delegated scopes (`scp`), as the token lists them.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// App roles (`roles`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Group object ids (`groups`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Tenant ids (`tid`).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Refuse every caller. A deny rule takes no requirements.
    #[serde(default)]
    pub deny: bool,
}

/// Why a `[policy]` table does not compile. Rules are numbered from 0, as
/// in `policy.rules[0]`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A name pattern is not a valid glob.
    #[error("policy.rules[{rule}]: bad pattern {pattern:?}: {source}")]
    BadPattern {
        /// The rule's index.
        rule: usize,
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        #[source]
        source: globset::Error,
    },
    /// A pattern is empty, so it could only match an empty name.
    #[error("policy.rules[{rule}]: an empty name pattern matches nothing")]
    EmptyPattern {
        /// The rule's index.
        rule: usize,
    },
    /// A rule names no tool, resource or prompt, so it would never apply.
    #[error("policy.rules[{rule}] names no tools, resources or prompts")]
    NoNames {
        /// The rule's index.
        rule: usize,
    },
    /// A rule both refuses outright and states requirements; which was
    /// meant is unclear.
    #[error(
        "policy.rules[{rule}] has deny = true and requirements; a deny rule refuses everyone, so drop one"
    )]
    DenyWithRequirements {
        /// The rule's index.
        rule: usize,
    },
    /// The patterns together are too large to compile.
    #[error("the policy's name patterns do not compile together: {0}")]
    Patterns(#[source] globset::Error),
}

impl PolicyError {
    /// The index of the rule at fault, if one is.
    pub fn rule(&self) -> Option<usize> {
        match self {
            PolicyError::BadPattern { rule, .. }
            | PolicyError::EmptyPattern { rule }
            | PolicyError::NoNames { rule }
            | PolicyError::DenyWithRequirements { rule } => Some(*rule),
            PolicyError::Patterns(_) => None,
        }
    }
}

/// The verdict on one name for one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused.
    Deny(Denial),
}

/// Why a caller may not use a name. Nothing here is secret: it may be shown
/// to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The rule that refused: its `name`, else `policy.rules[N]`; `None`
    /// when the default refused.
    pub rule: Option<String>,
    /// One sentence for the caller and the audit log.
    pub reason: String,
    /// Non-empty when a token with one of these scopes would be let
    /// through: answer 403 `insufficient_scope` naming them. Empty: more
    /// scope would not help, answer a JSON-RPC error.
    pub step_up_scopes: Vec<String>,
}

/// A compiled policy: immutable, cheap to evaluate.
pub struct Policy {
    default: DefaultAction,
    rules: Vec<Rule>,
    // One set per Kind (indexed by Kind::index), each pattern tagged with
    // the rule it belongs to: one pass over a name finds every rule it
    // matches, and the lowest index wins.
    names: [Names; 3],
}

#[derive(Default)]
struct Names {
    set: GlobSet,
    rule_of: Vec<usize>,
}

struct Rule {
    label: String,
    deny: bool,
    scopes: Vec<String>,
    roles: Vec<String>,
    groups: Vec<String>,
    tenants: Vec<String>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("default", &self.default)
            .field(
                "rules",
                &self.rules.iter().map(|r| &r.label).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

// Requirement categories a caller failed, as bits.
const UNMET_SCOPES: u8 = 1;
const UNMET_ROLES: u8 = 2;
const UNMET_GROUPS: u8 = 4;
const UNMET_TENANTS: u8 = 8;

// What evaluation found, before any message is written.
enum Verdict {
    Allow,
    DefaultDeny,
    DotSegments,
    RuleDeny(usize),
    Unmet(usize, u8),
}

impl Policy {
    /// Compiles the `[policy]` table, refusing bad patterns and rules that
    /// could never apply.
    pub fn compile(cfg: &PolicyConfig) -> Result<Policy, PolicyError> {
        let mut builders: [(GlobSetBuilder, Vec<usize>); 3] =
            std::array::from_fn(|_| (GlobSetBuilder::new(), Vec::new()));
        let mut rules = Vec::with_capacity(cfg.rules.len());
        for (i, rc) in cfg.rules.iter().enumerate() {
            if rc.tools.is_empty() && rc.resources.is_empty() && rc.prompts.is_empty() {
                return Err(PolicyError::NoNames { rule: i });
            }
            let has_requirements = !(rc.scopes.is_empty()
                && rc.roles.is_empty()
                && rc.groups.is_empty()
                && rc.tenants.is_empty());
            if rc.deny && has_requirements {
                return Err(PolicyError::DenyWithRequirements { rule: i });
            }
            for (kind, patterns) in [
                (Kind::Tool, &rc.tools),
                (Kind::Resource, &rc.resources),
                (Kind::Prompt, &rc.prompts),
            ] {
                let (builder, rule_of) = &mut builders[kind.index()];
                for pattern in patterns {
                    if pattern.is_empty() {
                        return Err(PolicyError::EmptyPattern { rule: i });
                    }
                    let glob = GlobBuilder::new(pattern)
                        .literal_separator(false)
                        .build()
                        .map_err(|source| PolicyError::BadPattern {
                            rule: i,
                            pattern: pattern.clone(),
                            source,
                        })?;
                    builder.add(glob);
                    rule_of.push(i);
                }
            }
            rules.push(Rule {
                label: rc
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("policy.rules[{i}]")),
                deny: rc.deny,
                scopes: rc.scopes.clone(),
                roles: rc.roles.clone(),
                groups: rc.groups.clone(),
                tenants: rc.tenants.clone(),
            });
        }
        let mut names: [Names; 3] = Default::default();
        for (slot, (builder, rule_of)) in names.iter_mut().zip(builders) {
            *slot = Names {
                set: builder.build().map_err(PolicyError::Patterns)?,
                rule_of,
            };
        }
        Ok(Policy {
            default: cfg.default,
            rules,
            names,
        })
    }

    /// The policy with no rules that allows everything: what a server
    /// without a `[policy]` table runs with.
    pub fn allow_all() -> Policy {
        Policy {
            default: DefaultAction::Allow,
            rules: Vec::new(),
            names: Default::default(),
        }
    }

    /// Whether `who` may use the `kind` called `name`. `who` is `None` when
    /// authentication is off: such a caller has no claims, so it meets no
    /// requirement.
    pub fn decide(&self, who: Option<&Principal>, kind: Kind, name: &str) -> Decision {
        match self.evaluate(who, kind, name) {
            Verdict::Allow => Decision::Allow,
            Verdict::DefaultDeny => Decision::Deny(Denial {
                rule: None,
                reason: format!(
                    "no policy rule allows this {}, and the policy's default is deny",
                    kind.as_str()
                ),
                step_up_scopes: Vec::new(),
            }),
            Verdict::DotSegments => Decision::Deny(Denial {
                rule: None,
                reason: "a resource URI with `.` or `..` path segments is refused; use its canonical form"
                    .to_owned(),
                step_up_scopes: Vec::new(),
            }),
            Verdict::RuleDeny(i) => {
                let rule = &self.rules[i];
                Decision::Deny(Denial {
                    reason: format!(
                        "the policy refuses this {} to everyone (rule \"{}\")",
                        kind.as_str(),
                        rule.label
                    ),
                    rule: Some(rule.label.clone()),
                    step_up_scopes: Vec::new(),
                })
            }
            Verdict::Unmet(i, unmet) => Decision::Deny(self.rules[i].denial(who, kind, unmet)),
        }
    }

    /// Whether a list shows `name` to `who`: exactly when [`Self::decide`]
    /// allows it, without writing a refusal.
    pub fn visible(&self, who: Option<&Principal>, kind: Kind, name: &str) -> bool {
        matches!(self.evaluate(who, kind, name), Verdict::Allow)
    }

    /// How many rules the policy has.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    fn evaluate(&self, who: Option<&Principal>, kind: Kind, name: &str) -> Verdict {
        if kind == Kind::Resource
            && !self.names[Kind::Resource.index()].set.is_empty()
            && has_dot_segments(name)
        {
            return Verdict::DotSegments;
        }
        let Some(i) = self.first_rule(kind, name) else {
            return match self.default {
                DefaultAction::Allow => Verdict::Allow,
                DefaultAction::Deny => Verdict::DefaultDeny,
            };
        };
        let rule = &self.rules[i];
        if rule.deny {
            return Verdict::RuleDeny(i);
        }
        match rule.unmet(who) {
            0 => Verdict::Allow,
            unmet => Verdict::Unmet(i, unmet),
        }
    }

    fn first_rule(&self, kind: Kind, name: &str) -> Option<usize> {
        let names = &self.names[kind.index()];
        if names.set.is_empty() {
            return None;
        }
        // Allocates only when something matches.
        let mut hits = Vec::new();
        names
            .set
            .matches_candidate_into(&Candidate::new(name), &mut hits);
        hits.into_iter().map(|p| names.rule_of[p]).min()
    }
}

// Whether the path of `uri` has a `.` or `..` segment, plain or
// percent-encoded.
fn has_dot_segments(uri: &str) -> bool {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    path.split(['/', '\\']).any(|segment| {
        if !segment.starts_with(['.', '%']) || segment.len() > 6 {
            return false;
        }
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

impl Rule {
    fn unmet(&self, who: Option<&Principal>) -> u8 {
        let any_of = |wanted: &[String], held: &[String]| {
            wanted.is_empty() || wanted.iter().any(|w| held.contains(w))
        };
        let (scopes, roles, groups, tenant): (&[String], &[String], &[String], Option<&str>) =
            match who {
                Some(p) => (&p.scopes, &p.roles, &p.groups, p.tenant_id.as_deref()),
                None => (&[], &[], &[], None),
            };
        let mut unmet = 0;
        if !any_of(&self.scopes, scopes) {
            unmet |= UNMET_SCOPES;
        }
        if !any_of(&self.roles, roles) {
            unmet |= UNMET_ROLES;
        }
        if !any_of(&self.groups, groups) {
            unmet |= UNMET_GROUPS;
        }
        if !self.tenants.is_empty() && !tenant.is_some_and(|t| self.tenants.iter().any(|w| w == t))
        {
            unmet |= UNMET_TENANTS;
        }
        unmet
    }

    fn denial(&self, who: Option<&Principal>, kind: Kind, unmet: u8) -> Denial {
        let Some(p) = who else {
            return Denial {
                rule: Some(self.label.clone()),
                reason: format!(
                    "this {} has requirements (rule \"{}\") and authentication is off, so no caller meets them",
                    kind.as_str(),
                    self.label
                ),
                step_up_scopes: Vec::new(),
            };
        };
        let mut needs = Vec::with_capacity(4);
        if unmet & UNMET_SCOPES != 0 {
            let mut need = format!("one of the delegated scopes {}", self.scopes.join(", "));
            if p.kind == TokenKind::AppOnly {
                need.push_str(", which an app-only token cannot carry");
            }
            needs.push(need);
        }
        if unmet & UNMET_ROLES != 0 {
            needs.push(format!("one of the app roles {}", self.roles.join(", ")));
        }
        if unmet & UNMET_GROUPS != 0 {
            // Group and tenant ids are not echoed: the caller learns which
            // requirement failed, not whom the rule admits.
            needs.push(if p.groups_overage {
                "membership in one of the rule's groups, which this token cannot show: it has too many groups to list them (Entra's groups overage)".to_owned()
            } else {
                "membership in one of the rule's groups".to_owned()
            });
        }
        if unmet & UNMET_TENANTS != 0 {
            needs.push("a token from one of the rule's tenants".to_owned());
        }
        // More scope helps only when scope is all that is missing, and only
        // a delegated token can gain scopes.
        let step_up_scopes = if unmet == UNMET_SCOPES && p.kind == TokenKind::Delegated {
            self.scopes.clone()
        } else {
            Vec::new()
        };
        Denial {
            rule: Some(self.label.clone()),
            reason: format!(
                "this {} requires {} (rule \"{}\")",
                kind.as_str(),
                needs.join(" and "),
                self.label
            ),
            step_up_scopes,
        }
    }
}

/// The policy in force, replaced whole on reload. Readers take the current
/// one without a lock; a reader holding an old one finishes with it.
pub struct PolicyHandle {
    current: ArcSwap<Policy>,
}

impl PolicyHandle {
    /// A handle holding `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            current: ArcSwap::from_pointee(policy),
        }
    }

    /// The policy in force now.
    pub fn load(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Puts `policy` in force for every call that starts from now on.
    pub fn replace(&self, policy: Policy) {
        self.current.store(Arc::new(policy));
    }
}

impl Default for PolicyHandle {
    fn default() -> Self {
        Self::new(Policy::allow_all())
    }
}

impl fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PolicyHandle")
            .field(&*self.current.load())
            .finish()
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
