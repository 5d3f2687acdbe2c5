//! Counter slots of operator rules: handed out once and kept stable, so a
//! rule's counters survive restarts and reloads.

use std::collections::{BTreeMap, BTreeSet};

use befund_common::{COUNTER_SLOTS, FIRST_RULE_SLOT};

use super::rules::Rule;

/// Which rule owns which counter slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotTable {
    by_rule: BTreeMap<Rule, u32>,
}

/// Every rule slot is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "all {} counter slots for rules are in use; remove rules you no longer need",
    COUNTER_SLOTS - FIRST_RULE_SLOT
)]
pub struct SlotsExhausted;

/// The slot a rule got from [`SlotTable::assign`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// The slot.
    pub slot: u32,
    /// True when the slot was free before: its counters must be zeroed
    /// because an earlier rule may have used it.
    pub fresh: bool,
}

impl SlotTable {
    /// A table from stored `(rule, slot)` pairs. Entries with a slot outside
    /// the rule range or a slot already taken are dropped; those rules get a
    /// new slot when they are next assigned.
    pub fn from_entries(entries: impl IntoIterator<Item = (Rule, u32)>) -> Self {
        let mut used = BTreeSet::new();
        let mut by_rule = BTreeMap::new();
        for (rule, slot) in entries {
            let in_range = (FIRST_RULE_SLOT..COUNTER_SLOTS).contains(&slot);
            if in_range && !by_rule.contains_key(&rule) && used.insert(slot) {
                by_rule.insert(rule, slot);
            }
        }
        Self { by_rule }
    }

    /// The slot of `rule`, if it has one.
    pub fn get(&self, rule: &Rule) -> Option<u32> {
        self.by_rule.get(rule).copied()
    }

    /// The slot of `rule`, handing out the lowest free one if it has none.
    ///
    /// # Errors
    ///
    /// [`SlotsExhausted`] when every rule slot is taken.
    pub fn assign(&mut self, rule: Rule) -> Result<Assigned, SlotsExhausted> {
        if let Some(slot) = self.get(&rule) {
            return Ok(Assigned { slot, fresh: false });
        }
        let used: BTreeSet<u32> = self.by_rule.values().copied().collect();
        let slot = (FIRST_RULE_SLOT..COUNTER_SLOTS)
            .find(|s| !used.contains(s))
            .ok_or(SlotsExhausted)?;
        self.by_rule.insert(rule, slot);
        Ok(Assigned { slot, fresh: true })
    }

    /// Frees the slot of `rule`.
    pub fn release(&mut self, rule: &Rule) -> Option<u32> {
        self.by_rule.remove(rule)
    }

    /// Frees the slots of every rule for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&Rule) -> bool) {
        self.by_rule.retain(|rule, _| keep(rule));
    }

    /// The rule that owns `slot`.
    pub fn rule_of(&self, slot: u32) -> Option<&Rule> {
        self.by_rule
            .iter()
            .find(|(_, s)| **s == slot)
            .map(|(r, _)| r)
    }

    /// Every `(rule, slot)` pair, ordered by rule.
    pub fn iter(&self) -> impl Iterator<Item = (&Rule, u32)> {
        self.by_rule.iter().map(|(r, s)| (r, *s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: u8) -> Rule {
        Rule::Block {
            source: format!("10.0.{n}.0/24").parse().unwrap(),
        }
    }

    #[test]
    fn assign_hands_out_the_lowest_free_rule_slot_once() {
        let mut table = SlotTable::default();
        assert_eq!(
            table.assign(block(1)),
            Ok(Assigned {
                slot: FIRST_RULE_SLOT,
                fresh: true
            })
        );
        assert_eq!(table.assign(block(2)).unwrap().slot, FIRST_RULE_SLOT + 1);
        assert_eq!(
            table.assign(block(1)),
            Ok(Assigned {
                slot: FIRST_RULE_SLOT,
                fresh: false
            })
        );
    }

    #[test]
    fn released_slot_is_reused_as_fresh() {
        let mut table = SlotTable::default();
        table.assign(block(1)).unwrap();
        table.assign(block(2)).unwrap();
        assert_eq!(table.release(&block(1)), Some(FIRST_RULE_SLOT));
        let again = table.assign(block(3)).unwrap();
        assert_eq!(again.slot, FIRST_RULE_SLOT);
        assert!(again.fresh);
        assert_eq!(table.get(&block(2)), Some(FIRST_RULE_SLOT + 1));
    }

    #[test]
    fn slots_stay_with_their_rules_across_a_round_trip() {
        let mut table = SlotTable::default();
        for n in 0..5 {
            table.assign(block(n)).unwrap();
        }
        table.release(&block(2));
        let stored: Vec<(Rule, u32)> = table.iter().map(|(r, s)| (*r, s)).collect();
        assert_eq!(SlotTable::from_entries(stored), table);
    }

    #[test]
    fn stored_entries_with_bad_or_duplicate_slots_are_dropped() {
        let table = SlotTable::from_entries([
            (block(1), 3),
            (block(2), FIRST_RULE_SLOT),
            (block(3), FIRST_RULE_SLOT),
            (block(4), COUNTER_SLOTS),
        ]);
        assert_eq!(table.iter().count(), 1);
        assert_eq!(table.get(&block(2)), Some(FIRST_RULE_SLOT));
        assert_eq!(table.rule_of(FIRST_RULE_SLOT), Some(&block(2)));
    }

    #[test]
    fn assign_fails_when_every_slot_is_taken() {
        let mut table = SlotTable::default();
        let total = COUNTER_SLOTS - FIRST_RULE_SLOT;
        for n in 0..total {
            let rule = Rule::Block {
                source: crate::cidr::Cidr::host(std::net::Ipv4Addr::from(n).into()),
            };
            table.assign(rule).unwrap();
        }
        assert_eq!(table.assign(block(200)), Err(SlotsExhausted));
    }

    #[test]
    fn retain_frees_slots_of_dropped_rules() {
        let mut table = SlotTable::default();
        table.assign(block(1)).unwrap();
        table.assign(block(2)).unwrap();
        table.retain(|r| *r == block(2));
        assert_eq!(table.get(&block(1)), None);
        assert_eq!(table.get(&block(2)), Some(FIRST_RULE_SLOT + 1));
    }
}
