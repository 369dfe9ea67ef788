//! The stored ACL set, indexed by resource, and Kafka's allow/deny decision.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::filter::AclFilter;
use crate::model::{
    AclBinding, Operation, PatternType, Permission, ResourceType, WILDCARD, WILDCARD_PRINCIPAL,
};

/// The ACL set and the decision. `allow.everyone.if.no.acl.found = false`: no matching allow
/// means denied.
///
/// Bindings are indexed by resource type, then resource name (literal and prefixed side by
/// side), with the lengths of the stored prefixes kept per type. [`Acls::authorize`] runs on
/// every request, so it only looks up the name itself, `*`, and the name's prefixes of a
/// stored length, never unrelated bindings. Iteration is in [`AclBinding`]'s order.
///
/// Serialized as a plain list of bindings; deserializing validates each one as a creation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acls {
    by_type: BTreeMap<ResourceType, TypeIndex>,
    len: usize,
}

/// The bindings of one resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TypeIndex {
    /// Bindings by resource name; a name's set holds its literal and prefixed bindings.
    by_name: BTreeMap<String, BTreeSet<AclBinding>>,
    /// Prefix length (bytes) to the number of prefixed bindings of that length, so a lookup
    /// tries only prefix lengths that exist.
    prefix_lens: BTreeMap<usize, usize>,
}

impl TypeIndex {
    /// Every binding that applies to a resource called `name`: literal `name`, literal `*`,
    /// and prefixed bindings whose prefix starts `name`. Each binding is yielded once.
    fn applicable<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a AclBinding> + 'a {
        let literal = |b: &&AclBinding| b.pattern_type == PatternType::Literal;
        let exact = self.by_name.get(name).into_iter().flatten().filter(literal);
        let wildcard = (name != WILDCARD)
            .then(|| self.by_name.get(WILDCARD))
            .flatten()
            .into_iter()
            .flatten()
            .filter(literal);
        let prefixed = self
            .prefix_lens
            .range(..=name.len())
            .filter_map(move |(len, _)| name.get(..*len))
            .filter_map(|prefix| self.by_name.get(prefix))
            .flatten()
            .filter(|b| b.pattern_type == PatternType::Prefixed);
        exact.chain(wildcard).chain(prefixed)
    }

    fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.by_name.values().flatten()
    }

    /// The bindings a filter could select, narrowed by its name where the index allows.
    fn candidates<'a>(&'a self, f: &'a AclFilter) -> Box<dyn Iterator<Item = &'a AclBinding> + 'a> {
        match (&f.resource_name, f.pattern_type) {
            (Some(name), PatternType::Match) => Box::new(self.applicable(name)),
            (Some(name), _) => Box::new(self.by_name.get(name.as_str()).into_iter().flatten()),
            (None, _) => Box::new(self.iter()),
        }
    }
}

impl Acls {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a binding; false if it was already present. The binding is stored as given:
    /// check it with [`AclBinding::validate`] (or build it with `from_creation`) first.
    pub fn add(&mut self, b: AclBinding) -> bool {
        let index = self.by_type.entry(b.resource_type).or_default();
        let prefix_len = (b.pattern_type == PatternType::Prefixed).then_some(b.resource_name.len());
        let added = match index.by_name.get_mut(b.resource_name.as_str()) {
            Some(set) => set.insert(b),
            None => {
                let name = b.resource_name.clone();
                index.by_name.insert(name, BTreeSet::from([b]));
                true
            }
        };
        if added {
            if let Some(len) = prefix_len {
                *index.prefix_lens.entry(len).or_default() += 1;
            }
            self.len += 1;
        }
        added
    }

    /// Removes one binding; false if it was not present.
    pub fn remove(&mut self, b: &AclBinding) -> bool {
        let Some(index) = self.by_type.get_mut(&b.resource_type) else {
            return false;
        };
        let Some(set) = index.by_name.get_mut(b.resource_name.as_str()) else {
            return false;
        };
        if !set.remove(b) {
            return false;
        }
        if set.is_empty() {
            index.by_name.remove(b.resource_name.as_str());
        }
        if b.pattern_type == PatternType::Prefixed {
            let len = b.resource_name.len();
            if let Some(count) = index.prefix_lens.get_mut(&len) {
                *count -= 1;
                if *count == 0 {
                    index.prefix_lens.remove(&len);
                }
            }
        }
        if index.by_name.is_empty() {
            self.by_type.remove(&b.resource_type);
        }
        self.len -= 1;
        true
    }

    /// Removes every binding the filter selects and returns them, sorted (DeleteAcls).
    pub fn remove_matching(&mut self, f: &AclFilter) -> Vec<AclBinding> {
        let removed = self.matching(f);
        for b in &removed {
            self.remove(b);
        }
        removed
    }

    /// The bindings the filter selects, sorted, so answers are deterministic (DescribeAcls).
    pub fn matching(&self, f: &AclFilter) -> Vec<AclBinding> {
        let indexes: Box<dyn Iterator<Item = &TypeIndex>> = match f.resource_type {
            ResourceType::Any => Box::new(self.by_type.values()),
            t => Box::new(self.by_type.get(&t).into_iter()),
        };
        let mut out: Vec<AclBinding> = indexes
            .flat_map(|index| index.candidates(f))
            .filter(|b| f.matches(b))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// The number of bindings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every binding, in [`AclBinding`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.by_type.values().flat_map(TypeIndex::iter)
    }

    /// Kafka's decision for `principal` (e.g. "User:alice") connecting from `host` (an IP as
    /// text): deny wins; a DENY binding matches the operation itself or All; an ALLOW matches
    /// the operation, All, or implies it: Describe is implied by Read, Write, Delete, Alter;
    /// DescribeConfigs by AlterConfigs. Principal matches exactly or "User:*"; host exactly
    /// or "*"; resources: literal exact name or literal "*", prefixed when the name starts
    /// with the prefix. A filter-only operation or resource type (Any, Unknown) is denied.
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> bool {
        if matches!(operation, Operation::Any | Operation::Unknown)
            || matches!(resource_type, ResourceType::Any | ResourceType::Unknown)
        {
            return false;
        }
        let Some(index) = self.by_type.get(&resource_type) else {
            return false;
        };
        let mut allowed = false;
        for b in index.applicable(resource_name) {
            if !(b.principal == principal || b.principal == WILDCARD_PRINCIPAL)
                || !(b.host == host || b.host == WILDCARD)
            {
                continue;
            }
            match b.permission {
                Permission::Deny if b.operation == operation || b.operation == Operation::All => {
                    return false;
                }
                Permission::Allow if grants(b.operation, operation) => allowed = true,
                _ => {}
            }
        }
        allowed
    }
}

/// Whether an ALLOW on `granted` allows `wanted`, with Kafka's implied operations.
fn grants(granted: Operation, wanted: Operation) -> bool {
    use Operation::*;
    granted == All
        || granted == wanted
        || match wanted {
            Describe => matches!(granted, Read | Write | Delete | Alter),
            DescribeConfigs => granted == AlterConfigs,
            _ => false,
        }
}

impl FromIterator<AclBinding> for Acls {
    fn from_iter<I: IntoIterator<Item = AclBinding>>(iter: I) -> Self {
        let mut acls = Acls::new();
        acls.extend(iter);
        acls
    }
}

impl Extend<AclBinding> for Acls {
    fn extend<I: IntoIterator<Item = AclBinding>>(&mut self, iter: I) {
        for b in iter {
            self.add(b);
        }
    }
}

impl Serialize for Acls {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// Refuses invalid bindings, so a damaged or hand-edited file cannot smuggle in a binding
/// that matches more than creation would allow (e.g. an empty prefix).
impl<'de> Deserialize<'de> for Acls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bindings = Vec::<AclBinding>::deserialize(deserializer)?;
        let mut acls = Acls::new();
        for b in bindings {
            b.validate().map_err(serde::de::Error::custom)?;
            acls.add(b);
        }
        Ok(acls)
    }
}

#[cfg(test)]
mod tests;
