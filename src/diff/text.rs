//! Line diffs for `--content`: Myers' O(ND) algorithm in linear space
//! (the divide-and-conquer "middle snake" form, as GNU diff uses), with a
//! work budget: a sub-problem that would cost more is emitted as "delete
//! all, insert all" (a correct, not minimal, diff), so no input takes
//! unbounded time. Output in unified format with 3 lines of context, as
//! `diff -u` and `git diff` print it, and git's binary rule (a NUL byte in
//! the first 8000 bytes).

use std::collections::HashMap;
use std::io::Write;

/// Lines of context around changes.
pub const CONTEXT: usize = 3;
/// Bytes looked at for a NUL to call a content binary (git's rule).
pub const BINARY_PROBE: usize = 8000;
/// Work (snake steps and diagonals tried) allowed per diff before the
/// rest is given up as whole-block replacements.
const BUDGET: u64 = 50_000_000;

/// Whether git would call this content binary.
pub fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(BINARY_PROBE)].contains(&0)
}

/// Split into lines, each with its `\n` (the last may lack it).
pub fn lines(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' {
            out.push(&data[start..=i]);
            start = i + 1;
        }
    }
    if start < data.len() {
        out.push(&data[start..]);
    }
    out
}

/// Which lines are deleted from `a` and inserted into `b`; the unmarked
/// lines of both match one to one, in order.
pub struct Edits {
    pub deleted: Vec<bool>,
    pub inserted: Vec<bool>,
}

/// Compare two sequences of line ids.
pub fn diff_ids(a: &[u32], b: &[u32]) -> Edits {
    let mut e = Edits {
        deleted: vec![false; a.len()],
        inserted: vec![false; b.len()],
    };
    // The common ends first: the search arrays are sized for the middle
    // (a small edit in a large file costs little memory).
    let pre = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ahi, bhi) = (a.len() - suf, b.len() - suf);
    // Diagonals reach ±(dmax + 1), dmax = (n + m + 1) / 2 + 1.
    let dmax = (ahi - pre + bhi - pre).div_ceil(2) + 1;
    let mut ctx = Ctx {
        a,
        b,
        vf: vec![0; 2 * dmax + 3],
        vb: vec![0; 2 * dmax + 3],
        off: dmax as isize + 1,
        work: 0,
    };
    ctx.conquer(pre, ahi, pre, bhi, &mut e);
    e
}

struct Ctx<'a> {
    a: &'a [u32],
    b: &'a [u32],
    vf: Vec<usize>,
    vb: Vec<usize>,
    off: isize,
    work: u64,
}

impl Ctx<'_> {
    fn conquer(
        &mut self,
        mut alo: usize,
        mut ahi: usize,
        mut blo: usize,
        mut bhi: usize,
        e: &mut Edits,
    ) {
        // An explicit stack of sub-problems: no recursion depth to bound.
        let mut stack = vec![(alo, ahi, blo, bhi)];
        while let Some(p) = stack.pop() {
            (alo, ahi, blo, bhi) = p;
            while alo < ahi && blo < bhi && self.a[alo] == self.b[blo] {
                alo += 1;
                blo += 1;
            }
            while alo < ahi && blo < bhi && self.a[ahi - 1] == self.b[bhi - 1] {
                ahi -= 1;
                bhi -= 1;
            }
            if alo == ahi || blo == bhi {
                e.deleted[alo..ahi].fill(true);
                e.inserted[blo..bhi].fill(true);
                continue;
            }
            match self.middle_snake(alo, ahi, blo, bhi) {
                Some((x, y)) if (x, y) != (alo, blo) && (x, y) != (ahi, bhi) => {
                    // The second half is pushed first: the first is done
                    // first (the order does not matter for the result).
                    stack.push((x, ahi, y, bhi));
                    stack.push((alo, x, blo, y));
                }
                _ => {
                    e.deleted[alo..ahi].fill(true);
                    e.inserted[blo..bhi].fill(true);
                }
            }
        }
    }

    /// A point on an optimal edit path of `a[alo..ahi]` → `b[blo..bhi]`
    /// strictly inside it; `None` when the budget is spent.
    fn middle_snake(
        &mut self,
        alo: usize,
        ahi: usize,
        blo: usize,
        bhi: usize,
    ) -> Option<(usize, usize)> {
        let n = (ahi - alo) as isize;
        let m = (bhi - blo) as isize;
        let delta = n - m;
        let odd = delta & 1 == 1;
        let off = self.off;
        let idx = |k: isize| (k + off) as usize;
        self.vf[idx(1)] = 0;
        self.vb[idx(1)] = 0;
        let dmax = (n + m + 1) / 2 + 1;
        for d in 0..dmax {
            if self.work > BUDGET {
                return None;
            }
            // Forward paths.
            let mut k = -d;
            while k <= d {
                let mut x = if k == -d || (k != d && self.vf[idx(k - 1)] < self.vf[idx(k + 1)]) {
                    self.vf[idx(k + 1)] as isize
                } else {
                    self.vf[idx(k - 1)] as isize + 1
                };
                let mut y = x - k;
                let (x0, y0) = (x, y);
                while x < n && y < m && self.a[alo + x as usize] == self.b[blo + y as usize] {
                    x += 1;
                    y += 1;
                }
                self.work += 1 + (x - x0) as u64;
                self.vf[idx(k)] = x as usize;
                if odd && (k - delta).abs() < d && x + self.vb[idx(delta - k)] as isize >= n {
                    return Some((alo + x0 as usize, blo + y0 as usize));
                }
                k += 2;
            }
            // Backward paths (x, y counted from the ends).
            let mut k = -d;
            while k <= d {
                let mut x = if k == -d || (k != d && self.vb[idx(k - 1)] < self.vb[idx(k + 1)]) {
                    self.vb[idx(k + 1)] as isize
                } else {
                    self.vb[idx(k - 1)] as isize + 1
                };
                let mut y = x - k;
                let x0 = x;
                while x < n && y < m && self.a[ahi - 1 - x as usize] == self.b[bhi - 1 - y as usize]
                {
                    x += 1;
                    y += 1;
                }
                self.work += 1 + (x - x0) as u64;
                self.vb[idx(k)] = x as usize;
                if !odd && (k - delta).abs() <= d && x + self.vf[idx(delta - k)] as isize >= n {
                    return Some((ahi - x as usize, bhi - y as usize));
                }
                k += 2;
            }
        }
        None
    }
}

/// A run of changed lines: `a[a0..a1]` replaced by `b[b0..b1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    a0: usize,
    a1: usize,
    b0: usize,
    b1: usize,
}

fn blocks(e: &Edits) -> Vec<Block> {
    let (n, m) = (e.deleted.len(), e.inserted.len());
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && !e.deleted[i] && !e.inserted[j] {
            i += 1;
            j += 1;
            continue;
        }
        let (a0, b0) = (i, j);
        while i < n && e.deleted[i] {
            i += 1;
        }
        while j < m && e.inserted[j] {
            j += 1;
        }
        if (i, j) == (a0, b0) {
            // Unmatched counts (cannot happen with consistent edits):
            // treat the rest as replaced.
            i = n;
            j = m;
        }
        out.push(Block {
            a0,
            a1: i,
            b0,
            b1: j,
        });
    }
    out
}

fn range(start: usize, len: usize) -> String {
    match len {
        0 => format!("{start},0"),
        1 => format!("{}", start + 1),
        _ => format!("{},{len}", start + 1),
    }
}

/// Write the hunks (`@@ … @@` and lines) of the unified diff of `old` and
/// `new`; nothing when they are equal. Returns whether anything differed.
pub fn write_hunks(out: &mut dyn Write, old: &[u8], new: &[u8]) -> std::io::Result<bool> {
    let la = lines(old);
    let lb = lines(new);
    let mut ids: HashMap<&[u8], u32> = HashMap::new();
    let mut a = Vec::with_capacity(la.len());
    let mut b = Vec::with_capacity(lb.len());
    for (src, dst) in [(&la, &mut a), (&lb, &mut b)] {
        for l in src.iter() {
            let next = ids.len() as u32;
            dst.push(*ids.entry(l).or_insert(next));
        }
    }
    let e = diff_ids(&a, &b);
    let bl = blocks(&e);
    if bl.is_empty() {
        return Ok(false);
    }
    let mut h = 0;
    while h < bl.len() {
        // Blocks closer than twice the context share a hunk.
        let mut last = h;
        while last + 1 < bl.len() && bl[last + 1].a0 - bl[last].a1 <= 2 * CONTEXT {
            last += 1;
        }
        let first = bl[h];
        let end = bl[last];
        let lead = first.a0.min(CONTEXT);
        let a_start = first.a0 - lead;
        let b_start = first.b0 - lead;
        let a_end = (end.a1 + CONTEXT).min(la.len());
        let b_end = end.b1 + (a_end - end.a1);
        writeln!(
            out,
            "@@ -{} +{} @@",
            range(a_start, a_end - a_start),
            range(b_start, b_end - b_start)
        )?;
        let mut ai = a_start;
        for blk in &bl[h..=last] {
            while ai < blk.a0 {
                line(out, b' ', la[ai])?;
                ai += 1;
            }
            for l in &la[blk.a0..blk.a1] {
                line(out, b'-', l)?;
            }
            for l in &lb[blk.b0..blk.b1] {
                line(out, b'+', l)?;
            }
            ai = blk.a1;
        }
        while ai < a_end {
            line(out, b' ', la[ai])?;
            ai += 1;
        }
        h = last + 1;
    }
    Ok(true)
}

fn line(out: &mut dyn Write, tag: u8, l: &[u8]) -> std::io::Result<()> {
    out.write_all(&[tag])?;
    out.write_all(l)?;
    if !l.ends_with(b"\n") {
        out.write_all(b"\n\\ No newline at end of file\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcs(a: &[u32], b: &[u32]) -> usize {
        let mut t = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                t[i][j] = if a[i] == b[j] {
                    t[i + 1][j + 1] + 1
                } else {
                    t[i + 1][j].max(t[i][j + 1])
                };
            }
        }
        t[0][0]
    }

    fn check(a: &[u32], b: &[u32]) {
        let e = diff_ids(a, b);
        let kept_a: Vec<u32> = a
            .iter()
            .zip(&e.deleted)
            .filter(|(_, d)| !**d)
            .map(|(x, _)| *x)
            .collect();
        let kept_b: Vec<u32> = b
            .iter()
            .zip(&e.inserted)
            .filter(|(_, d)| !**d)
            .map(|(x, _)| *x)
            .collect();
        assert_eq!(kept_a, kept_b, "{a:?} {b:?}");
        assert_eq!(kept_a.len(), lcs(a, b), "not minimal: {a:?} {b:?}");
    }

    #[test]
    fn minimal_on_random_inputs() {
        let mut s: u64 = 0x1234_5678;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..3000 {
            let n = (next() % 14) as usize;
            let m = (next() % 14) as usize;
            let alpha = 1 + next() % 5;
            let a: Vec<u32> = (0..n).map(|_| (next() % alpha) as u32).collect();
            let b: Vec<u32> = (0..m).map(|_| (next() % alpha) as u32).collect();
            check(&a, &b);
        }
        check(&[], &[]);
        check(&[1, 2, 3], &[]);
        check(&[], &[1]);
    }

    fn unified(a: &str, b: &str) -> String {
        let mut v = Vec::new();
        write_hunks(&mut v, a.as_bytes(), b.as_bytes()).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn hunks_like_diff_u() {
        let a: String = (1..=20).map(|i| format!("{i}\n")).collect();
        let b: String = (1..=20)
            .filter(|&i| i != 18)
            .map(|i| {
                if i == 5 {
                    "five\n".to_string()
                } else {
                    format!("{i}\n")
                }
            })
            .collect();
        assert_eq!(
            unified(&a, &b),
            "@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n\
             @@ -15,6 +15,5 @@\n 15\n 16\n 17\n-18\n 19\n 20\n"
        );
        assert_eq!(unified("", "x\n"), "@@ -0,0 +1 @@\n+x\n");
        assert_eq!(
            unified("x\ny", "x\ny\n"),
            "@@ -1,2 +1,2 @@\n x\n-y\n\\ No newline at end of file\n+y\n"
        );
        assert_eq!(unified("same\n", "same\n"), "");
        assert!(is_binary(b"a\0b"));
        assert!(!is_binary(b"text"));
    }
}
