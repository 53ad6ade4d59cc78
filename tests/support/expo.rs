//! The one reader of the Prometheus text exposition (0.0.4, and the OpenMetrics text the
//! daemon writes): samples with their labels, plus the `# TYPE` and `# HELP` lines.

use std::collections::{BTreeMap, HashMap};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// `name{labels}` exactly as written, label order included.
    pub series: String,
}

/// A parsed exposition body.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// Metric family name -> type, from `# TYPE`.
    pub types: HashMap<String, String>,
    /// Metric family name -> help text, from `# HELP`.
    pub helps: HashMap<String, String>,
}

impl Scrape {
    /// Parses a text exposition; panics on a line it cannot read.
    pub fn parse(body: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, ty)) = rest.split_once(' ') {
                    s.types.insert(name.to_owned(), ty.to_owned());
                }
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                s.helps.insert(name.to_owned(), help.to_owned());
            } else if !line.starts_with('#') {
                let sample =
                    parse_line(line).unwrap_or_else(|| panic!("unparsable metrics line {line:?}"));
                s.samples.push(sample);
            }
        }
        s
    }

    /// Samples named `name` whose labels include every `(key, value)` of `want`.
    pub fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && want
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The single sample named `name` with these labels, if there is exactly one.
    pub fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        match self.find(name, want).as_slice() {
            [one] => Some(one.value),
            [] => None,
            many => panic!("{name} {want:?} matches {} series: {many:?}", many.len()),
        }
    }

    /// As [`Scrape::get`], panicking with the series list when it is missing.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.get(name, want).unwrap_or_else(|| {
            let near: Vec<_> = self
                .samples
                .iter()
                .filter(|s| s.name == name)
                .map(|s| &s.labels)
                .collect();
            panic!("no series {name} {want:?}; series of that name: {near:?}")
        })
    }

    /// Sum over the samples named `name` whose labels include `want` (0 when none).
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.find(name, want).iter().map(|s| s.value).sum()
    }

    /// The value of the series written exactly as `series` (`name{k="v",...}`, label order
    /// included).
    pub fn exact(&self, series: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.series == series)
            .map(|s| s.value)
    }

    /// Distinct values of label `key` over the samples named `name`.
    pub fn label_values(&self, name: &str, key: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(key).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, rest) = match line.find('{') {
        Some(_) => {
            let close = line.rfind('}')?;
            (&line[..=close], line[close + 1..].trim())
        }
        None => {
            let sp = line.find(' ')?;
            (&line[..sp], line[sp..].trim())
        }
    };
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.find('{') {
        None => (series.to_owned(), BTreeMap::new()),
        Some(open) => (
            series[..open].to_owned(),
            parse_labels(&series[open + 1..series.len() - 1])?,
        ),
    };
    Some(Sample {
        name,
        labels,
        value,
        series: series.to_owned(),
    })
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut val = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                '"' => break,
                c => val.push(c),
            }
        }
        out.insert(key.trim().to_owned(), val);
    }
}
