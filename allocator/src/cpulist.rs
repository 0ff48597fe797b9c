//! CPU and node lists in the kernel's list format (`0-3,8,10-11`), as
//! written by `taskset -c`, `numactl` and the files under `/sys` and `/proc`.

use std::fmt;

/// A sorted, duplicate-free set of CPU (or node) numbers.
///
/// Invariant: `ids` is strictly increasing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct IdList {
    ids: Vec<usize>,
}

/// Why a list string was refused; the message quotes the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListParseError {
    #[error("'{part}' in list '{list}' is not a number or a range like 0-3")]
    BadItem { list: String, part: String },
    #[error("range '{part}' in list '{list}' runs backwards")]
    Backwards { list: String, part: String },
    #[error("'{part}' in list '{list}' is larger than the supported maximum {max}")]
    TooLarge {
        list: String,
        part: String,
        max: usize,
    },
}

/// Upper bound on an id, so that a typo like `0-4000000000` cannot allocate
/// a huge vector. Linux's `NR_CPUS` maximum is 8192 (`CONFIG_NR_CPUS_RANGE_END`).
pub const MAX_ID: usize = 8192;

impl IdList {
    /// Parses `0-3,8,10-11`; an empty (or all-whitespace) string is the empty list.
    /// Also accepts the stride form `0-10:2` that the kernel documents for
    /// `cpuset` lists.
    pub fn parse(list: &str) -> Result<Self, ListParseError> {
        let trimmed = list.trim();
        let mut ids = Vec::new();
        if trimmed.is_empty() {
            return Ok(Self { ids });
        }
        for part in trimmed.split(',').map(str::trim) {
            let bad = || ListParseError::BadItem {
                list: trimmed.to_owned(),
                part: part.to_owned(),
            };
            let (range, stride) = match part.split_once(':') {
                Some((r, s)) => (r, s.parse::<usize>().map_err(|_| bad())?.max(1)),
                None => (part, 1),
            };
            let (lo, hi) = match range.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse::<usize>().map_err(|_| bad())?,
                    b.trim().parse::<usize>().map_err(|_| bad())?,
                ),
                None => {
                    let v = range.trim().parse::<usize>().map_err(|_| bad())?;
                    (v, v)
                }
            };
            if lo > hi {
                return Err(ListParseError::Backwards {
                    list: trimmed.to_owned(),
                    part: part.to_owned(),
                });
            }
            if hi >= MAX_ID {
                return Err(ListParseError::TooLarge {
                    list: trimmed.to_owned(),
                    part: part.to_owned(),
                    max: MAX_ID - 1,
                });
            }
            ids.extend((lo..=hi).step_by(stride));
        }
        Ok(Self::from_ids(ids))
    }

    /// Builds a list from any ids (sorted and de-duplicated here).
    pub fn from_ids(mut ids: Vec<usize>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        Self { ids }
    }

    pub fn as_slice(&self) -> &[usize] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn contains(&self, id: usize) -> bool {
        self.ids.binary_search(&id).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.ids.iter().copied()
    }

    pub fn max(&self) -> Option<usize> {
        self.ids.last().copied()
    }

    /// Ids present in both lists.
    pub fn intersection(&self, other: &IdList) -> IdList {
        Self {
            ids: self.iter().filter(|&id| other.contains(id)).collect(),
        }
    }

    /// Ids of `self` that are not in `other`.
    pub fn difference(&self, other: &IdList) -> IdList {
        Self {
            ids: self.iter().filter(|&id| !other.contains(id)).collect(),
        }
    }
}

/// Prints the compact kernel form, e.g. `0-3,8,10-11`.
impl fmt::Display for IdList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.ids.len() {
            let start = self.ids[i];
            let mut end = start;
            while i + 1 < self.ids.len() && self.ids[i + 1] == end + 1 {
                i += 1;
                end = self.ids[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

impl FromIterator<usize> for IdList {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        Self::from_ids(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_singles_and_strides() {
        let l = IdList::parse("0-3,8,10-11").unwrap();
        assert_eq!(l.as_slice(), &[0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(l.to_string(), "0-3,8,10-11");
        assert_eq!(IdList::parse("0-8:4").unwrap().as_slice(), &[0, 4, 8]);
        assert_eq!(IdList::parse(" 3,1,1 \n").unwrap().as_slice(), &[1, 3]);
        assert!(IdList::parse("").unwrap().is_empty());
        assert!(IdList::parse("\n").unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_lists_naming_the_part() {
        let e = IdList::parse("0-3,x").unwrap_err();
        assert!(e.to_string().contains("'x'"), "{e}");
        assert!(matches!(
            IdList::parse("5-2"),
            Err(ListParseError::Backwards { .. })
        ));
        assert!(matches!(
            IdList::parse("0-4000000000"),
            Err(ListParseError::TooLarge { .. })
        ));
        assert!(IdList::parse("1,,2").is_err());
    }

    #[test]
    fn set_operations() {
        let a = IdList::parse("0-5").unwrap();
        let b = IdList::parse("4-9").unwrap();
        assert_eq!(a.intersection(&b).to_string(), "4-5");
        assert_eq!(a.difference(&b).to_string(), "0-3");
    }
}
