//! The paper's human interpretability study, stored in SQLite: raters see the best patches of a
//! graph node or of a raw filter (which one is not shown) and say whether they show one part,
//! a mix, or nothing; [`summary`] compares part purity of nodes and filters per layer.
//!
//! The items are drawn once when the study file is created (seeded, balanced: the same number of
//! nodes and filters per layer, in a seeded order) and recorded in it with the graph's digest, so
//! that a study file is never reused with another graph. Every submission is validated and
//! written in a transaction; a rater can rate an item once (a repeat is refused, the database
//! is unchanged).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::{ExploreError, Result};

/// Schema version written to `meta`.
pub const STUDY_SCHEMA_VERSION: u32 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('node', 'filter')),
    layer_index INTEGER NOT NULL,
    layer TEXT NOT NULL,
    unit INTEGER NOT NULL,
    position INTEGER NOT NULL UNIQUE,
    UNIQUE (kind, layer_index, unit)
);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY,
    item INTEGER NOT NULL REFERENCES items(id),
    rater TEXT NOT NULL,
    answer TEXT NOT NULL CHECK (answer IN ('part', 'mixed', 'nothing')),
    rated_at_unix INTEGER NOT NULL,
    UNIQUE (item, rater)
);
";

/// What is rated: a node of the graph or a raw filter (a channel's argmax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// A graph node (`unit` = node index in its layer).
    Node,
    /// A raw filter (`unit` = channel).
    Filter,
}

impl ItemKind {
    /// `node` or `filter`.
    pub fn name(self) -> &'static str {
        match self {
            ItemKind::Node => "node",
            ItemKind::Filter => "filter",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "node" => Ok(ItemKind::Node),
            "filter" => Ok(ItemKind::Filter),
            other => Err(ExploreError::Study(format!("unknown item kind {other:?} in the study file"))),
        }
    }
}

/// A rater's judgement of an item's patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The patches show one part.
    Part,
    /// Several parts.
    Mixed,
    /// No recognizable part.
    Nothing,
}

impl Answer {
    /// Every answer, in the order of the buttons.
    pub const ALL: [Answer; 3] = [Answer::Part, Answer::Mixed, Answer::Nothing];

    /// `part`, `mixed` or `nothing`.
    pub fn name(self) -> &'static str {
        match self {
            Answer::Part => "part",
            Answer::Mixed => "mixed",
            Answer::Nothing => "nothing",
        }
    }

    /// Parses a submitted answer; anything else is a [`ExploreError::BadRequest`].
    pub fn parse(s: &str) -> Result<Self> {
        Answer::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| ExploreError::BadRequest(format!("answer={s:?}: expected part, mixed or nothing")))
    }
}

/// One study item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StudyItem {
    /// Its id in the study file (what the pages show: it does not tell node from filter).
    pub id: i64,
    /// Node or filter.
    pub kind: ItemKind,
    /// Graph layer index.
    pub layer_index: usize,
    /// Layer name.
    pub layer: String,
    /// Node index or channel.
    pub unit: usize,
}

/// How the items of a new study are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyPlan {
    /// Nodes and, as many, filters per layer.
    pub per_layer: usize,
    /// Seed of the draw and of the presentation order.
    pub seed: u64,
}

impl Default for StudyPlan {
    /// 20 nodes and 20 filters per layer, seed 0.
    fn default() -> Self {
        StudyPlan { per_layer: 20, seed: 0 }
    }
}

/// A layer as the study sees it: name, number of nodes, number of filters.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyLayer {
    /// Layer name.
    pub name: String,
    /// Graph nodes of the layer.
    pub nodes: usize,
    /// Filters (channels) of the layer.
    pub filters: usize,
}

/// Raters' ids: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn check_rater(rater: &str) -> Result<()> {
    let ok = (1..=64).contains(&rater.len()) && rater.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ExploreError::BadRequest(format!(
            "rater={rater:?}: a rater id is 1 to 64 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// An open study file, shared by the server's requests (one connection behind a lock; SQLite in
/// WAL mode, so that `study summary` can read while a server writes).
pub struct Study {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> ExploreError + '_ {
    move |e| ExploreError::Study(format!("{}: {e}", path.display()))
}

impl Study {
    /// Opens the study file `path`, creating it with items drawn by `plan` from `layers` when
    /// it does not exist. An existing file must have been made for the graph of digest
    /// `graph_digest` (else the error names both).
    pub fn open(path: &Path, graph_digest: &str, layers: &[StudyLayer], plan: &StudyPlan) -> Result<Study> {
        let err = sql(path);
        let mut conn = Connection::open(path).map_err(&err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(&err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(&err)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(&err)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        tx.execute_batch(SCHEMA).map_err(&err)?;
        let recorded: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'graph_digest'", [], |r| r.get(0))
            .optional()
            .map_err(&err)?;
        match recorded {
            Some(d) if d != graph_digest => {
                return Err(ExploreError::Study(format!(
                    "{} is a study of another graph (digest {d}, this graph's is {graph_digest}); pass another \
                     --study file",
                    path.display()
                )))
            }
            Some(_) => {}
            None => {
                let items = draw_items(layers, plan);
                if items.is_empty() {
                    return Err(ExploreError::Study("the study has no items (per_layer is 0?)".into()));
                }
                for (position, (kind, layer_index, unit)) in items.iter().enumerate() {
                    tx.execute(
                        "INSERT INTO items (kind, layer_index, layer, unit, position) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            kind.name(),
                            *layer_index as i64,
                            layers[*layer_index].name,
                            *unit as i64,
                            position as i64
                        ],
                    )
                    .map_err(&err)?;
                }
                for (key, value) in [
                    ("graph_digest", graph_digest.to_string()),
                    ("schema_version", STUDY_SCHEMA_VERSION.to_string()),
                    ("per_layer", plan.per_layer.to_string()),
                    ("seed", plan.seed.to_string()),
                    ("created_at_unix", now_unix().to_string()),
                ] {
                    tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", params![key, value]).map_err(&err)?;
                }
                tracing::info!(study = %path.display(), items = items.len(), "study created");
            }
        }
        tx.commit().map_err(&err)?;
        Ok(Study { path: path.to_path_buf(), conn: Mutex::new(conn) })
    }

    /// The study file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic never happens under the lock; SQLite's own state is transactional.
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The item `id`; a [`ExploreError::NotFound`] when there is none.
    pub fn item(&self, id: i64) -> Result<StudyItem> {
        let conn = self.lock();
        conn.query_row("SELECT id, kind, layer_index, layer, unit FROM items WHERE id = ?1", [id], row_item)
            .optional()
            .map_err(sql(&self.path))?
            .ok_or_else(|| ExploreError::NotFound(format!("study item {id}")))?
    }

    /// The next item for `rater`: among those it has not rated, one of the fewest ratings, in
    /// the study's seeded order; `None` when it has rated them all.
    pub fn next_for(&self, rater: &str) -> Result<Option<StudyItem>> {
        check_rater(rater)?;
        let conn = self.lock();
        conn.query_row(
            "SELECT i.id, i.kind, i.layer_index, i.layer, i.unit FROM items i
             WHERE NOT EXISTS (SELECT 1 FROM ratings r WHERE r.item = i.id AND r.rater = ?1)
             ORDER BY (SELECT COUNT(*) FROM ratings r WHERE r.item = i.id), i.position
             LIMIT 1",
            [rater],
            row_item,
        )
        .optional()
        .map_err(sql(&self.path))?
        .transpose()
    }

    /// How many items `rater` has rated, and how many there are.
    pub fn progress(&self, rater: &str) -> Result<(usize, usize)> {
        check_rater(rater)?;
        let conn = self.lock();
        let err = sql(&self.path);
        let done: i64 =
            conn.query_row("SELECT COUNT(*) FROM ratings WHERE rater = ?1", [rater], |r| r.get(0)).map_err(&err)?;
        let all: i64 = conn.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0)).map_err(&err)?;
        Ok((done as usize, all as usize))
    }

    /// Records `rater`'s `answer` for item `item`, in one transaction: a bad rater id or an
    /// unknown item is refused, and so is a second rating of the same item by the same rater
    /// ([`ExploreError::BadRequest`]); the database is unchanged then.
    pub fn submit(&self, rater: &str, item: i64, answer: Answer) -> Result<()> {
        check_rater(rater)?;
        let mut conn = self.lock();
        let err = sql(&self.path);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        let exists: Option<i64> =
            tx.query_row("SELECT id FROM items WHERE id = ?1", [item], |r| r.get(0)).optional().map_err(&err)?;
        if exists.is_none() {
            return Err(ExploreError::BadRequest(format!("item={item}: no such study item")));
        }
        let done: Option<i64> = tx
            .query_row("SELECT id FROM ratings WHERE item = ?1 AND rater = ?2", params![item, rater], |r| r.get(0))
            .optional()
            .map_err(&err)?;
        if done.is_some() {
            return Err(ExploreError::BadRequest(format!("rater {rater} has already rated item {item}")));
        }
        tx.execute(
            "INSERT INTO ratings (item, rater, answer, rated_at_unix) VALUES (?1, ?2, ?3, ?4)",
            params![item, rater, answer.name(), now_unix()],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)
    }
}

fn row_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StudyItem>> {
    let (id, kind, layer_index, layer, unit): (i64, String, i64, String, i64) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    Ok(ItemKind::parse(&kind).map(|kind| StudyItem {
        id,
        kind,
        layer_index: layer_index as usize,
        layer,
        unit: unit as usize,
    }))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The items of a new study: per layer, `per_layer` nodes and as many filters drawn without
/// replacement (ChaCha8 seeded by `seed`), then all of them in one seeded order.
pub fn draw_items(layers: &[StudyLayer], plan: &StudyPlan) -> Vec<(ItemKind, usize, usize)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(plan.seed);
    let mut items = Vec::new();
    for (l, layer) in layers.iter().enumerate() {
        let n = plan.per_layer.min(layer.nodes).min(layer.filters);
        for (kind, count) in [(ItemKind::Node, layer.nodes), (ItemKind::Filter, layer.filters)] {
            let mut units: Vec<usize> = (0..count).collect();
            units.shuffle(&mut rng);
            let mut chosen = units[..n].to_vec();
            chosen.sort_unstable();
            items.extend(chosen.into_iter().map(|u| (kind, l, u)));
        }
    }
    items.shuffle(&mut rng);
    items
}

/// One row of a study summary: a layer (or all layers) and a kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurityRow {
    /// Layer name, or `all`.
    pub layer: String,
    /// Node or filter.
    pub kind: ItemKind,
    /// Items of this layer and kind.
    pub items: usize,
    /// Items with at least one rating.
    pub rated_items: usize,
    /// Ratings.
    pub ratings: usize,
    /// Ratings of each answer: part, mixed, nothing.
    pub part: usize,
    /// See `part`.
    pub mixed: usize,
    /// See `part`.
    pub nothing: usize,
    /// `part / ratings` (`None` without ratings).
    pub part_purity: Option<f64>,
    /// Fleiss' κ over the items with two or more ratings (`None` when there are none, or when
    /// every rating is the same answer).
    pub fleiss_kappa: Option<f64>,
    /// Mean pairwise agreement over those items.
    pub agreement: Option<f64>,
}

/// The summary of a study file: part purity of graph nodes and raw filters per layer and over
/// all layers, with counts and inter-rater agreement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudySummary {
    /// The study file.
    pub study: PathBuf,
    /// The graph's digest recorded in it.
    pub graph_digest: String,
    /// Raters who rated at least once.
    pub raters: usize,
    /// Per layer (in layer order) and kind, then `all`.
    pub rows: Vec<PurityRow>,
}

/// Reads a study file (read-only) and summarizes it.
pub fn summary(path: &Path) -> Result<StudySummary> {
    let err = sql(path);
    if !path.is_file() {
        return Err(ExploreError::Study(format!("{}: no such study file", path.display())));
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(&err)?;
    let graph_digest: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'graph_digest'", [], |r| r.get(0))
        .map_err(|e| ExploreError::Study(format!("{}: not a study file ({e})", path.display())))?;
    let raters: i64 = conn.query_row("SELECT COUNT(DISTINCT rater) FROM ratings", [], |r| r.get(0)).map_err(&err)?;
    // per item: kind, layer, its answers
    let mut stmt = conn
        .prepare(
            "SELECT i.id, i.kind, i.layer_index, i.layer, r.answer FROM items i LEFT JOIN ratings r ON r.item = i.id
             ORDER BY i.layer_index, i.id",
        )
        .map_err(&err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .map_err(&err)?;
    // (layer index, layer, kind) → item id → counts [part, mixed, nothing]
    let mut groups: std::collections::BTreeMap<
        (i64, String, &'static str),
        std::collections::BTreeMap<i64, [usize; 3]>,
    > = Default::default();
    for row in rows {
        let (id, kind, layer_index, layer, answer) = row.map_err(&err)?;
        let kind = ItemKind::parse(&kind)?;
        let counts = groups.entry((layer_index, layer, kind.name())).or_default().entry(id).or_insert([0; 3]);
        if let Some(a) = answer {
            let a =
                Answer::parse(&a).map_err(|_| ExploreError::Study(format!("{}: bad answer {a:?}", path.display())))?;
            counts[Answer::ALL.iter().position(|x| *x == a).unwrap_or(0)] += 1;
        }
    }
    let mut out = Vec::new();
    let mut all: std::collections::BTreeMap<&'static str, Vec<[usize; 3]>> = Default::default();
    for ((_, layer, kind), items) in &groups {
        let counts: Vec<[usize; 3]> = items.values().copied().collect();
        all.entry(kind).or_default().extend(counts.iter().copied());
        out.push(purity_row(layer, ItemKind::parse(kind)?, &counts));
    }
    for (kind, counts) in &all {
        out.push(purity_row("all", ItemKind::parse(kind)?, counts));
    }
    Ok(StudySummary { study: path.to_path_buf(), graph_digest, raters: raters as usize, rows: out })
}

fn purity_row(layer: &str, kind: ItemKind, items: &[[usize; 3]]) -> PurityRow {
    let total = |c: &[usize; 3]| c.iter().sum::<usize>();
    let ratings: usize = items.iter().map(total).sum();
    let sum = |k: usize| items.iter().map(|c| c[k]).sum::<usize>();
    let (kappa, agreement) = fleiss(items);
    PurityRow {
        layer: layer.to_string(),
        kind,
        items: items.len(),
        rated_items: items.iter().filter(|c| total(c) > 0).count(),
        ratings,
        part: sum(0),
        mixed: sum(1),
        nothing: sum(2),
        part_purity: (ratings > 0).then(|| sum(0) as f64 / ratings as f64),
        fleiss_kappa: kappa,
        agreement,
    }
}

/// Fleiss' κ for items rated by varying numbers of raters (only items with ≥ 2 ratings count):
/// `P_i = (Σ_j n_ij² − n_i) / (n_i (n_i − 1))`, `P̄` their mean, `p_j` the share of answer `j`
/// over those ratings, `P_e = Σ p_j²`, `κ = (P̄ − P_e) / (1 − P_e)`. Returns `(κ, P̄)`; κ is
/// `None` when `P_e = 1` (every rating the same answer).
pub fn fleiss(items: &[[usize; 3]]) -> (Option<f64>, Option<f64>) {
    let rated: Vec<&[usize; 3]> = items.iter().filter(|c| c.iter().sum::<usize>() >= 2).collect();
    if rated.is_empty() {
        return (None, None);
    }
    let mut p_bar = 0.0;
    let mut shares = [0.0f64; 3];
    let mut total = 0.0;
    for c in &rated {
        let n = c.iter().sum::<usize>() as f64;
        let sq: f64 = c.iter().map(|&x| (x * x) as f64).sum();
        p_bar += (sq - n) / (n * (n - 1.0));
        for (s, &x) in shares.iter_mut().zip(c.iter()) {
            *s += x as f64;
        }
        total += n;
    }
    p_bar /= rated.len() as f64;
    let p_e: f64 = shares.iter().map(|s| (s / total).powi(2)).sum();
    let kappa = (p_e < 1.0 - 1e-12).then(|| (p_bar - p_e) / (1.0 - p_e));
    (kappa, Some(p_bar))
}

impl StudySummary {
    /// The summary as a Markdown table.
    pub fn markdown(&self) -> String {
        let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
        let mut s = format!(
            "Study {} ({} raters)\n\n| layer | kind | items (rated) | ratings | part | mixed | nothing | part purity | Fleiss κ | agreement |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.study.display(),
            self.raters
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} |\n",
                r.layer,
                r.kind.name(),
                r.items,
                r.rated_items,
                r.ratings,
                r.part,
                r.mixed,
                r.nothing,
                f(r.part_purity),
                f(r.fleiss_kappa),
                f(r.agreement)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers() -> Vec<StudyLayer> {
        vec![
            StudyLayer { name: "conv4_3".into(), nodes: 40, filters: 8 },
            StudyLayer { name: "conv5_2".into(), nodes: 20, filters: 8 },
        ]
    }

    fn open(dir: &Path, digest: &str) -> Result<Study> {
        Study::open(&dir.join("s.sqlite"), digest, &layers(), &StudyPlan { per_layer: 3, seed: 5 })
    }

    #[test]
    fn items_are_seeded_balanced_and_bound_to_their_graph() {
        let plan = StudyPlan { per_layer: 3, seed: 5 };
        let items = draw_items(&layers(), &plan);
        assert_eq!(items, draw_items(&layers(), &plan), "seeded");
        assert_ne!(items, draw_items(&layers(), &StudyPlan { per_layer: 3, seed: 6 }));
        for l in 0..2 {
            for kind in [ItemKind::Node, ItemKind::Filter] {
                assert_eq!(items.iter().filter(|i| i.0 == kind && i.1 == l).count(), 3, "balanced");
            }
        }
        assert!(items.iter().all(|&(k, l, u)| u < if k == ItemKind::Node { layers()[l].nodes } else { 8 }));

        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), "g1").unwrap());
        let again = open(dir.path(), "g1").unwrap();
        assert_eq!(again.progress("a").unwrap(), (0, 12), "reopening keeps the items");
        let e = open(dir.path(), "g2").err().unwrap().to_string();
        assert!(e.contains("another graph") && e.contains("g1") && e.contains("g2"), "{e}");
    }

    #[test]
    fn a_rater_sees_every_item_once_and_repeats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let study = open(dir.path(), "g").unwrap();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(item) = study.next_for("ann").unwrap() {
            assert!(seen.insert(item.id), "item {} shown twice", item.id);
            study.submit("ann", item.id, Answer::Part).unwrap();
        }
        assert_eq!(seen.len(), 12);
        assert_eq!(study.progress("ann").unwrap(), (12, 12));
        let first = *seen.iter().next().unwrap();
        let e = study.submit("ann", first, Answer::Mixed).unwrap_err().to_string();
        assert!(e.contains("already rated"), "{e}");
        for (rater, item) in [("", first), ("a b", first), ("<x>", first), (&*"r".repeat(65), first), ("bob", 999)] {
            assert!(
                matches!(study.submit(rater, item, Answer::Part), Err(ExploreError::BadRequest(_))),
                "{rater:?} {item}"
            );
        }
        // The second rater starts with the items rated least: all have one rating, so in order.
        let next = study.next_for("bob").unwrap().unwrap();
        assert!(seen.contains(&next.id));
        let s = summary(&dir.path().join("s.sqlite")).unwrap();
        let all: usize = s.rows.iter().filter(|r| r.layer != "all").map(|r| r.ratings).sum();
        assert_eq!(all, 12, "the refused submissions wrote nothing");
        assert!(Answer::parse("maybe").is_err());
    }

    #[test]
    fn concurrent_submissions_are_all_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let study = open(dir.path(), "g").unwrap();
        let ids: Vec<i64> = (1..=12).collect();
        std::thread::scope(|s| {
            for t in 0..8 {
                let (study, ids) = (&study, &ids);
                s.spawn(move || {
                    for &id in ids {
                        // raters 0..4 twice each (one of the two is refused), 4..8 once
                        let rater = format!("r{}", t % 4 + if t >= 4 { 4 } else { 0 });
                        let _ = study.submit(&rater, id, Answer::ALL[(t + id as usize) % 3]);
                        let _ = study.submit(&format!("r{}", t % 4), id, Answer::Part);
                    }
                });
            }
        });
        let s = summary(&dir.path().join("s.sqlite")).unwrap();
        let total: usize = s.rows.iter().filter(|r| r.layer == "all").map(|r| r.ratings).sum();
        assert_eq!(total, 8 * 12, "8 raters × 12 items, each exactly once");
        assert_eq!(s.raters, 8);
    }

    #[test]
    fn summary_counts_purity_and_agreement() {
        let dir = tempfile::tempdir().unwrap();
        let study = open(dir.path(), "g").unwrap();
        let items: Vec<StudyItem> = (1..=12).map(|id| study.item(id).unwrap()).collect();
        // Nodes: both raters say "part". Filters: one says part, the other mixed.
        for item in &items {
            let second = if item.kind == ItemKind::Node { Answer::Part } else { Answer::Mixed };
            study.submit("a", item.id, Answer::Part).unwrap();
            study.submit("b", item.id, second).unwrap();
        }
        let s = summary(&dir.path().join("s.sqlite")).unwrap();
        let row = |layer: &str, kind| s.rows.iter().find(|r| r.layer == layer && r.kind == kind).unwrap();
        let nodes = row("all", ItemKind::Node);
        assert_eq!((nodes.items, nodes.ratings, nodes.part), (6, 12, 12));
        assert_eq!(nodes.part_purity, Some(1.0));
        assert_eq!(nodes.agreement, Some(1.0));
        assert_eq!(nodes.fleiss_kappa, None, "one answer only: κ undefined");
        let filters = row("conv4_3", ItemKind::Filter);
        assert_eq!((filters.items, filters.part, filters.mixed), (3, 3, 3));
        assert_eq!(filters.part_purity, Some(0.5));
        assert_eq!(filters.agreement, Some(0.0));
        assert_eq!(filters.fleiss_kappa, Some(-1.0));
        assert!(s.markdown().contains("| conv4_3 | filter | 3 (3) | 6 | 3 | 3 | 0 | 0.500 |"), "{}", s.markdown());
        let e = summary(&dir.path().join("nope.sqlite")).unwrap_err().to_string();
        assert!(e.contains("nope.sqlite"), "{e}");
    }

    #[test]
    fn fleiss_kappa_matches_a_hand_computation() {
        // 3 items rated by 3 raters: [3,0,0], [0,3,0], [1,1,1]: P_i = 1, 1, 0 → P̄ = 2/3;
        // p = (4/9, 4/9, 1/9) → P_e = 33/81; κ = (2/3 − 33/81) / (1 − 33/81) = 21/48.
        let (kappa, agreement) = fleiss(&[[3, 0, 0], [0, 3, 0], [1, 1, 1], [1, 0, 0]]);
        assert!((agreement.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((kappa.unwrap() - 21.0 / 48.0).abs() < 1e-12, "{kappa:?}");
        assert_eq!(fleiss(&[[1, 0, 0]]), (None, None));
    }
}
