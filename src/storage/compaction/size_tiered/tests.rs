use std::collections::HashSet;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

const MIB: u64 = 1 << 20;

fn tables(sizes: &[u64]) -> Vec<TableMeta> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size_bytes)| table(i as u64 + 1, size_bytes))
        .collect()
}

fn table(id: u64, size_bytes: u64) -> TableMeta {
    TableMeta {
        id,
        size_bytes,
        entries: 1,
        smallest_key: Bytes::from_static(b"a"),
        largest_key: Bytes::from_static(b"z"),
        created_seq: id,
    }
}

#[test]
fn fewer_than_min_threshold_similar_tables_wait() {
    let o = SizeTieredOptions::default();
    assert_eq!(choose(&tables(&[]), &o), None);
    assert_eq!(choose(&tables(&[MIB, MIB, MIB]), &o), None);
    assert_eq!(
        choose(&tables(&[100 * MIB, 200 * MIB, 400 * MIB, 800 * MIB]), &o),
        None
    );
}

#[test]
fn small_tables_share_one_bucket() {
    let o = SizeTieredOptions::default();
    // 1 KiB and 40 MiB are far apart but both under min_sstable_bytes.
    let t = tables(&[1024, 40 * MIB, 3 * MIB, 10 * MIB, 500 * MIB]);
    assert_eq!(buckets(&t, &o), vec![vec![1, 3, 4, 2], vec![5]]);
    assert_eq!(choose(&t, &o).unwrap().inputs, vec![1, 3, 4, 2]);
}

#[test]
fn the_bucket_with_most_tables_then_smallest_average_wins() {
    let o = SizeTieredOptions::default();
    let four_large = [1000 * MIB, 1100 * MIB, 1200 * MIB, 1000 * MIB];
    let five_mid = [100 * MIB, 110 * MIB, 120 * MIB, 100 * MIB, 105 * MIB];
    let t = tables(&[four_large.as_slice(), five_mid.as_slice()].concat());
    assert_eq!(choose(&t, &o).unwrap().inputs, vec![5, 8, 9, 6, 7]);
    let four_mid = [100 * MIB, 110 * MIB, 120 * MIB, 100 * MIB];
    let t = tables(&[four_large.as_slice(), four_mid.as_slice()].concat());
    assert_eq!(choose(&t, &o).unwrap().inputs, vec![5, 8, 6, 7]);
}

#[test]
fn at_most_max_threshold_smallest_inputs() {
    let o = SizeTieredOptions::default();
    let sizes: Vec<u64> = (0..40).map(|i| MIB + 40 - i).collect();
    let choice = choose(&tables(&sizes), &o).unwrap();
    assert_eq!(choice.inputs.len(), 32);
    assert_eq!(choice.inputs[0], 40);
    assert_eq!(*choice.inputs.last().unwrap(), 9);
}

#[test]
#[should_panic(expected = "min_threshold < 2")]
fn nonsense_options_panic() {
    let o = SizeTieredOptions {
        min_threshold: 1,
        ..SizeTieredOptions::default()
    };
    choose(&[], &o);
}

fn options() -> impl Strategy<Value = SizeTieredOptions> {
    (2usize..6, 0usize..30, 0u64..(64 * MIB)).prop_map(|(min_threshold, extra, min_bytes)| {
        SizeTieredOptions {
            min_threshold,
            max_threshold: min_threshold + extra,
            min_sstable_bytes: min_bytes,
            ..SizeTieredOptions::default()
        }
    })
}

fn sizes() -> impl Strategy<Value = Vec<u64>> {
    let size = prop_oneof![0u64..(8 * MIB), 0u64..(4 << 30), Just(u64::MAX)];
    proptest::collection::vec(size, 0..120)
}

proptest! {
    #[test]
    fn a_choice_is_valid(sizes in sizes(), o in options()) {
        let t = tables(&sizes);
        let bucketed: Vec<u64> = buckets(&t, &o).concat();
        prop_assert_eq!(bucketed.len(), t.len());
        if let Some(choice) = choose(&t, &o) {
            let ids: HashSet<u64> = t.iter().map(|t| t.id).collect();
            let unique: HashSet<u64> = choice.inputs.iter().copied().collect();
            prop_assert_eq!(unique.len(), choice.inputs.len(), "duplicates");
            prop_assert!(choice.inputs.iter().all(|id| ids.contains(id)));
            prop_assert!(choice.inputs.len() >= o.min_threshold);
            prop_assert!(choice.inputs.len() <= o.max_threshold);
            // The inputs are one bucket's smallest tables.
            let bucket = buckets(&t, &o)
                .into_iter()
                .find(|b| b.contains(&choice.inputs[0]))
                .unwrap();
            prop_assert_eq!(&bucket[..choice.inputs.len()], &choice.inputs[..]);
        } else {
            prop_assert!(buckets(&t, &o).iter().all(|b| b.len() < o.min_threshold));
        }
    }

    #[test]
    fn applying_choices_converges(sizes in sizes(), o in options()) {
        let mut t = tables(&sizes);
        let mut next_id = t.len() as u64 + 1;
        let mut rounds = 0;
        while let Some(choice) = choose(&t, &o) {
            let size: u64 = t
                .iter()
                .filter(|x| choice.inputs.contains(&x.id))
                .fold(0u64, |sum, x| sum.saturating_add(x.size_bytes));
            let before = t.len();
            t.retain(|x| !choice.inputs.contains(&x.id));
            prop_assert_eq!(t.len(), before - choice.inputs.len());
            t.push(table(next_id, size));
            next_id += 1;
            rounds += 1;
            prop_assert!(rounds <= sizes.len(), "no progress");
        }
        prop_assert!(buckets(&t, &o).iter().all(|b| b.len() < o.min_threshold));
    }
}
