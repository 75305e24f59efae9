//! [`BudgetSpec`]: one spend budget as configured (`budgets:` in the config, or
//! [`Budgets::set`](super::Budgets::set) at run time), and its checks.

use std::fmt;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Fractions of the limit a budget warns at when the thresholds are not given.
pub const DEFAULT_THRESHOLDS: [f64; 3] = [0.5, 0.8, 1.0];

/// The longest `rolling` period: a year. Longer windows are monthly budgets in disguise,
/// and would keep Redis keys alive for years.
const MAX_ROLLING: Duration = Duration::from_secs(366 * 24 * 3600);

/// Whose calls a budget counts.
///
/// In YAML: `global`, or one of `key: <key id>`, `user: <name>`, `team: <name>`,
/// `project: <name>`, `model: <requested model>` (an alias stays an alias: a budget on
/// `fast` counts the calls that ask for `fast`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    /// Every call.
    Global,
    /// One gateway key, by its id (never the key itself).
    Key(String),
    User(String),
    Team(String),
    Project(String),
    /// Calls that ask for this model name.
    Model(String),
}

impl BudgetScope {
    /// `global`, `key`, `user`, `team`, `project` or `model`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Key(_) => "key",
            Self::User(_) => "user",
            Self::Team(_) => "team",
            Self::Project(_) => "project",
            Self::Model(_) => "model",
        }
    }

    /// The scope's value (`None` for global).
    pub fn value(&self) -> Option<&str> {
        match self {
            Self::Global => None,
            Self::Key(v) | Self::User(v) | Self::Team(v) | Self::Project(v) | Self::Model(v) => {
                Some(v)
            }
        }
    }
}

impl fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value() {
            None => f.write_str("global"),
            Some(v) => write!(f, "{} {v}", self.kind()),
        }
    }
}

/// When a budget's spend starts again from zero.
///
/// In YAML: `daily`, `weekly`, `monthly`, or `{ rolling: 7d }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// From midnight to midnight in the budget's time zone.
    Daily,
    /// From Monday 00:00 to the next Monday 00:00 in the budget's time zone.
    Weekly,
    /// From the first of the month at 00:00 to the first of the next, in the time zone.
    Monthly,
    /// Back-to-back windows of this length, counted from 1970-01-01T00:00:00Z (the time
    /// zone plays no part): `rolling: 7d` resets every 7 days at the same instant on every
    /// gateway instance. Not a sliding window: spend does not fade out call by call.
    Rolling(#[serde(with = "humantime_serde")] Duration),
}

impl fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Daily => f.write_str("daily"),
            Self::Weekly => f.write_str("weekly"),
            Self::Monthly => f.write_str("monthly"),
            Self::Rolling(d) => write!(f, "rolling {}", humantime::format_duration(*d)),
        }
    }
}

/// What a budget does at its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetMode {
    /// Refuse calls that could take the spend past the limit (HTTP 402).
    #[default]
    Hard,
    /// Admit every call; warn as the spend crosses each threshold.
    Soft,
}

impl BudgetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hard => "hard",
            Self::Soft => "soft",
        }
    }
}

fn utc() -> String {
    "UTC".to_owned()
}

fn default_thresholds() -> Vec<f64> {
    DEFAULT_THRESHOLDS.to_vec()
}

/// One spend budget.
///
/// ```yaml
/// id: search-team-daily
/// scope: { team: search }
/// limit_usd: 25
/// period: daily
/// time_zone: America/New_York   # IANA name; default UTC
/// mode: hard                    # or soft; default hard
/// thresholds: [0.5, 0.8, 1.0]   # the default
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// A stable name: in refusals, warnings, status and the shared store's keys.
    pub id: String,
    pub scope: BudgetScope,
    /// Dollars per period.
    pub limit_usd: Decimal,
    pub period: BudgetPeriod,
    /// The IANA time zone whose midnights start daily, weekly and monthly periods.
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default)]
    pub mode: BudgetMode,
    /// Fractions of the limit (`0.8` is 80%) at which the budget warns, once per period.
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<f64>,
}

impl BudgetSpec {
    /// A hard budget in UTC with the default thresholds.
    pub fn new(
        id: impl Into<String>,
        scope: BudgetScope,
        limit_usd: Decimal,
        period: BudgetPeriod,
    ) -> Self {
        Self {
            id: id.into(),
            scope,
            limit_usd,
            period,
            time_zone: utc(),
            mode: BudgetMode::Hard,
            thresholds: default_thresholds(),
        }
    }

    /// The same budget in another mode (builder style).
    pub fn mode(mut self, mode: BudgetMode) -> Self {
        self.mode = mode;
        self
    }

    /// The same budget in another time zone (builder style).
    pub fn time_zone(mut self, time_zone: impl Into<String>) -> Self {
        self.time_zone = time_zone.into();
        self
    }

    /// Every problem with this spec, as (field, reason): empty when it is valid.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 128
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !id_ok {
            out.push((
                "id",
                format!(
                    "`{}` is not a budget id: use 1 to 128 letters, digits, `-`, `_` or `.`",
                    self.id
                ),
            ));
        }
        if self.scope.value().is_some_and(str::is_empty) {
            out.push((
                "scope",
                format!("the {} of a budget must not be empty", self.scope.kind()),
            ));
        }
        if self.limit_usd <= Decimal::ZERO {
            out.push((
                "limit_usd",
                format!("{} must be more than zero dollars", self.limit_usd),
            ));
        } else if super::money::to_units_up(self.limit_usd).is_none() {
            out.push((
                "limit_usd",
                format!(
                    "{} is more than weir can count ({} dollars at most)",
                    self.limit_usd,
                    super::money::MAX_USD
                ),
            ));
        }
        if let BudgetPeriod::Rolling(d) = self.period
            && (d < Duration::from_secs(60) || d > MAX_ROLLING)
        {
            out.push((
                "period.rolling",
                format!(
                    "{} is not between 1 minute and 366 days; write e.g. `7d` or `12h`",
                    humantime::format_duration(d)
                ),
            ));
        }
        if jiff::tz::TimeZone::get(&self.time_zone).is_err() {
            out.push((
                "time_zone",
                format!(
                    "`{}` is not an IANA time zone name; write e.g. `UTC`, `Europe/Paris` or \
                     `America/New_York`",
                    self.time_zone
                ),
            ));
        }
        for t in &self.thresholds {
            if !(t.is_finite() && *t > 0.0 && *t <= 10.0) {
                out.push((
                    "thresholds",
                    format!("{t} is not a fraction of the limit above 0 (0.8 is 80%), at most 10"),
                ));
            }
        }
        out
    }

    /// `Ok` when valid, else every problem in one message (for [`Budgets::set`]).
    ///
    /// [`Budgets::set`]: super::Budgets::set
    pub fn validate(&self) -> Result<(), String> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = problems
            .into_iter()
            .map(|(field, reason)| format!("{field}: {reason}"))
            .collect();
        Err(format!("budget `{}`: {}", self.id, listed.join("; ")))
    }
}
