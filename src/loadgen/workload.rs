//! What the load is made of: YCSB's core workloads as operation mixes, and the
//! operations themselves.
//!
//! | workload | mix | key choice (default) |
//! |---|---|---|
//! | a | 50% read, 50% update | zipfian |
//! | b | 95% read, 5% update | zipfian |
//! | c | 100% read | zipfian |
//! | d | 95% read, 5% insert | latest |
//! | f | 50% read, 50% read-modify-write | zipfian |
//! | write-only | 100% update | zipfian |
//! | `--read-ratio R` | R read, 1 − R update | uniform (the bench's old behaviour) |
//!
//! YCSB's workload E (scans) is left out: ringkv has no range reads.

use super::keys::Distribution;

/// One operation type; each has its own latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// GET of an existing record.
    Read,
    /// PUT of an existing record (with the context of its last read, on ringkv).
    Update,
    /// PUT of a new record past the end of the key space (workload D).
    Insert,
    /// GET, then PUT with the context the GET returned; one sample for both.
    ReadModifyWrite,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::Read,
        Operation::Update,
        Operation::Insert,
        Operation::ReadModifyWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Update => "update",
            Operation::Insert => "insert",
            Operation::ReadModifyWrite => "rmw",
        }
    }

    /// Position in [`Operation::ALL`] (and in per-operation arrays).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Proportions of each operation, summing to 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix {
    pub read: f64,
    pub update: f64,
    pub insert: f64,
    pub read_modify_write: f64,
}

impl Mix {
    fn new(read: f64, update: f64, insert: f64, read_modify_write: f64) -> Mix {
        let mix = Mix {
            read,
            update,
            insert,
            read_modify_write,
        };
        let sum = read + update + insert + read_modify_write;
        assert!((sum - 1.0).abs() < 1e-9, "mix sums to {sum}: {mix:?}");
        mix
    }

    /// The operation for the uniform draw `u` in [0, 1).
    pub fn choose(&self, u: f64) -> Operation {
        let mut bound = self.read;
        if u < bound {
            return Operation::Read;
        }
        bound += self.update;
        if u < bound {
            return Operation::Update;
        }
        bound += self.insert;
        if u < bound {
            return Operation::Insert;
        }
        if self.read_modify_write > 0.0 {
            return Operation::ReadModifyWrite;
        }
        // Rounding at the top of the range: the last operation with a share.
        [Operation::Insert, Operation::Update, Operation::Read]
            .into_iter()
            .find(|op| self.share(*op) > 0.0)
            .expect("a mix has at least one operation")
    }

    fn share(&self, op: Operation) -> f64 {
        match op {
            Operation::Read => self.read,
            Operation::Update => self.update,
            Operation::Insert => self.insert,
            Operation::ReadModifyWrite => self.read_modify_write,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    A,
    B,
    C,
    D,
    F,
    WriteOnly,
    /// `--read-ratio`: reads and updates in the given proportion.
    Custom {
        read_ratio: f64,
    },
}

impl Workload {
    pub fn mix(self) -> Mix {
        match self {
            Workload::A => Mix::new(0.5, 0.5, 0.0, 0.0),
            Workload::B => Mix::new(0.95, 0.05, 0.0, 0.0),
            Workload::C => Mix::new(1.0, 0.0, 0.0, 0.0),
            Workload::D => Mix::new(0.95, 0.0, 0.05, 0.0),
            Workload::F => Mix::new(0.5, 0.0, 0.0, 0.5),
            Workload::WriteOnly => Mix::new(0.0, 1.0, 0.0, 0.0),
            Workload::Custom { read_ratio } => {
                assert!((0.0..=1.0).contains(&read_ratio));
                Mix::new(read_ratio, 1.0 - read_ratio, 0.0, 0.0)
            }
        }
    }

    /// YCSB's request distribution for the workload.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::D => Distribution::Latest,
            Workload::Custom { .. } => Distribution::Uniform,
            _ => Distribution::Zipfian,
        }
    }

    pub fn name(self) -> String {
        match self {
            Workload::A => "a".into(),
            Workload::B => "b".into(),
            Workload::C => "c".into(),
            Workload::D => "d".into(),
            Workload::F => "f".into(),
            Workload::WriteOnly => "write-only".into(),
            Workload::Custom { read_ratio } => format!("read-ratio {read_ratio}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(workload: Workload) -> [f64; 4] {
        let mix = workload.mix();
        let mut counts = [0u64; 4];
        let draws = 100_000;
        for i in 0..draws {
            counts[mix.choose(i as f64 / draws as f64).index()] += 1;
        }
        counts.map(|c| c as f64 / draws as f64)
    }

    #[test]
    fn every_workload_draws_its_mix() {
        let close = |a: [f64; 4], b: [f64; 4]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-3);
        assert!(close(shares(Workload::A), [0.5, 0.5, 0.0, 0.0]));
        assert!(close(shares(Workload::B), [0.95, 0.05, 0.0, 0.0]));
        assert!(close(shares(Workload::C), [1.0, 0.0, 0.0, 0.0]));
        assert!(close(shares(Workload::D), [0.95, 0.0, 0.05, 0.0]));
        assert!(close(shares(Workload::F), [0.5, 0.0, 0.0, 0.5]));
        assert!(close(shares(Workload::WriteOnly), [0.0, 1.0, 0.0, 0.0]));
        let custom = Workload::Custom { read_ratio: 0.25 };
        assert!(close(shares(custom), [0.25, 0.75, 0.0, 0.0]));
    }

    #[test]
    fn the_top_of_the_range_picks_an_operation_of_the_mix() {
        for workload in [Workload::C, Workload::WriteOnly, Workload::D] {
            let op = workload.mix().choose(1.0 - f64::EPSILON);
            assert!(workload.mix().share(op) > 0.0, "{workload:?} gave {op:?}");
        }
    }
}
