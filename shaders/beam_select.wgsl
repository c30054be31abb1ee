// Beam search's selection step on the device: for every search of a batch, the `beam` best legal
// children of its rows, from the ID head's raw logits. Only the survivors leave the device. The
// buffer layouts, and the CPU reference this kernel is tested against, are in
// core/src/gpu/beam_select.rs.
//
// One workgroup per search:
//  1. each of its rows' log-normaliser, log Σ exp(logits), so that a child scores
//     row score + (logit − normaliser), in the host's order of operations;
//  2. the `beam` best children by radix select, one byte per pass, over a 64-bit rank: the
//     order-preserving bits of the score, then the complement of the child's trie node, so that
//     equal scores go to the smaller node as on the host (nodes are unique, so ranks are too);
//  3. the winners, appended in any order: the host sorts at most `beam` of them.
// Children whose every item the search excludes are never candidates.

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> rows: array<u32>;
@group(0) @binding(2) var<storage, read_write> searches: array<u32>;
@group(0) @binding(3) var<storage, read_write> trie: array<u32>;
@group(0) @binding(4) var<storage, read_write> norm: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<u32>;
@group(0) @binding(6) var<storage, read_write> info: array<u32>;

const WORKGROUP: u32 = {{ workgroup_size }}u;

var<workgroup> histogram: array<atomic<u32>, 256>;
var<workgroup> taken: atomic<u32>;
// The rank bytes decided so far (`decided` of them, from the top), and how many candidates at
// that prefix are still to take.
var<workgroup> prefix: vec2<u32>;
var<workgroup> decided: u32;
var<workgroup> needed: u32;
var<workgroup> finished: u32;
var<workgroup> width: u32;

struct Layout {
    rows: u32,
    vocab: u32,
    searches: u32,
    first_leaf: u32,
    // Where the excluded leaves start in `searches`.
    leaves_at: u32,
}

struct Rank {
    hi: u32,
    lo: u32,
    score: f32,
    live: bool,
}

// Larger is better; NaN below everything and the two zeros alike, as on the host.
fn order_key(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    if (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u {
        return 0u;
    }
    if (bits & 0x7fffffffu) == 0u {
        return 0x80000000u;
    }
    if (bits & 0x80000000u) != 0u {
        return ~bits;
    }
    return bits | 0x80000000u;
}

// First position in the sorted excluded leaves `searches[at + lo..at + hi]` not below `value`.
fn lower_bound(at: u32, lo_in: u32, hi_in: u32, value: u32) -> u32 {
    var lo = lo_in;
    var hi = hi_in;
    while lo < hi {
        let mid = (lo + hi) / 2u;
        if searches[at + mid] < value {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// Whether every leaf under `node` is excluded: its leaves are one range, bounded by the leftmost
// and rightmost descents (`trie[i]` is node i's first child).
fn covers(node: u32, l: Layout, excluded: vec2<u32>) -> bool {
    var first = node;
    var last = node;
    while first < l.first_leaf {
        first = trie[first];
    }
    while last < l.first_leaf {
        last = trie[last + 1u] - 1u;
    }
    let start = first - l.first_leaf;
    let end = last - l.first_leaf + 1u;
    let below = lower_bound(l.leaves_at, excluded.x, excluded.y, end)
        - lower_bound(l.leaves_at, excluded.x, excluded.y, start);
    return below == end - start;
}

fn code_of(node: u32, l: Layout) -> u32 {
    return trie[l.first_leaf + 1u + node];
}

fn rank(row: u32, child: u32, l: Layout, excluded: vec2<u32>) -> Rank {
    let logit = logits[row * l.vocab + code_of(child, l)];
    let score = bitcast<f32>(rows[l.rows + row]) + (logit - norm[row]);
    let live = excluded.x == excluded.y || !covers(child, l, excluded);
    return Rank(order_key(score), ~child, score, live);
}

// Byte `p` of a rank, from the top.
fn digit(r: Rank, p: u32) -> u32 {
    if p < 4u {
        return (r.hi >> (24u - 8u * p)) & 255u;
    }
    return (r.lo >> (56u - 8u * p)) & 255u;
}

fn with_digit(pre: vec2<u32>, p: u32, d: u32) -> vec2<u32> {
    if p < 4u {
        return vec2<u32>(pre.x | (d << (24u - 8u * p)), pre.y);
    }
    return vec2<u32>(pre.x, pre.y | (d << (56u - 8u * p)));
}

// The top `bytes` (0 to 4) bytes of x.
fn top(x: u32, bytes: u32) -> u32 {
    if bytes == 0u {
        return 0u;
    }
    return x & (0xffffffffu << (32u - 8u * bytes));
}

// The sign of (a rank's top `n` bytes − the prefix's).
fn compare_top(r: Rank, pre: vec2<u32>, n: u32) -> i32 {
    let a = top(r.hi, min(n, 4u));
    let b = top(pre.x, min(n, 4u));
    if a != b {
        return select(-1, 1, a > b);
    }
    let c = top(r.lo, max(n, 4u) - 4u);
    let d = top(pre.y, max(n, 4u) - 4u);
    if c != d {
        return select(-1, 1, c > d);
    }
    return 0;
}

@compute @workgroup_size({{ workgroup_size }})
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = group.x;
    let n = info[2];
    let l = Layout(info[0], info[1], n, info[4], 3u * n + 2u);
    let beam_max = info[3];
    let first_row = searches[g];
    let end_row = searches[g + 1u];
    let excluded = vec2<u32>(searches[2u * n + 1u + g], searches[2u * n + 2u + g]);
    let counts_at = n * beam_max * 4u;
    if lid == 0u {
        width = searches[n + 1u + g];
        needed = width;
        prefix = vec2<u32>(0u, 0u);
        decided = 0u;
        finished = 0u;
        atomicStore(&taken, 0u);
    }
    let beam = workgroupUniformLoad(&width);
    if beam == 0u {
        if lid == 0u {
            out[counts_at + g] = 0u;
        }
        return;
    }

    // 1. Log-normalisers.
    for (var row = first_row + lid; row < end_row; row += WORKGROUP) {
        let at = row * l.vocab;
        var m = logits[at];
        for (var v = 1u; v < l.vocab; v++) {
            m = max(m, logits[at + v]);
        }
        var sum = 0.0;
        for (var v = 0u; v < l.vocab; v++) {
            sum += exp(logits[at + v] - m);
        }
        norm[row] = m + log(sum);
    }
    storageBarrier();
    workgroupBarrier();

    // 2. Radix select: each pass counts the candidates still at the prefix by their next byte.
    for (var p = 0u; p < 8u; p++) {
        for (var b = lid; b < 256u; b += WORKGROUP) {
            atomicStore(&histogram[b], 0u);
        }
        workgroupBarrier();
        let pre = prefix;
        for (var row = first_row + lid; row < end_row; row += WORKGROUP) {
            let node = rows[row];
            for (var child = trie[node]; child < trie[node + 1u]; child++) {
                let r = rank(row, child, l, excluded);
                if r.live && compare_top(r, pre, p) == 0 {
                    atomicAdd(&histogram[digit(r, p)], 1u);
                }
            }
        }
        workgroupBarrier();
        if lid == 0u {
            if p == 0u {
                var total = 0u;
                for (var b = 0u; b < 256u; b++) {
                    total += atomicLoad(&histogram[b]);
                }
                // No more candidates than the beam: take them all.
                if total <= needed {
                    finished = 1u;
                }
            }
            var above = 0u;
            var b = 256u;
            while finished == 0u && b > 0u {
                b -= 1u;
                let h = atomicLoad(&histogram[b]);
                if above + h >= needed {
                    needed -= above;
                    prefix = with_digit(prefix, p, b);
                    decided = p + 1u;
                    if h == needed {
                        finished = 1u;
                    }
                    break;
                }
                above += h;
            }
        }
        if workgroupUniformLoad(&finished) == 1u {
            break;
        }
    }

    // 3. The winners: every candidate at or above the decided prefix.
    let pre = prefix;
    let bytes = decided;
    for (var row = first_row + lid; row < end_row; row += WORKGROUP) {
        let node = rows[row];
        for (var child = trie[node]; child < trie[node + 1u]; child++) {
            let r = rank(row, child, l, excluded);
            if r.live && compare_top(r, pre, bytes) >= 0 {
                let slot = atomicAdd(&taken, 1u);
                if slot < beam {
                    let at = (g * beam_max + slot) * 4u;
                    out[at] = row;
                    out[at + 1u] = code_of(child, l);
                    out[at + 2u] = child;
                    out[at + 3u] = bitcast<u32>(r.score);
                }
            }
        }
    }
    workgroupBarrier();
    if lid == 0u {
        out[counts_at + g] = min(atomicLoad(&taken), beam);
    }
}
