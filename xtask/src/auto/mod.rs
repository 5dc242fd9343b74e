//! `cargo xtask auto`: the most accurate compressed model that fits a board's budget.
//!
//! 1. the float baseline, trained (or taken from the cache) by a `compress` trial;
//! 2. the sensitivity table: every layer alone at every sparsity and bit width, scored
//!    by the probe ([`sprig_compressor::auto`]: a short fine-tune, or one-shot);
//! 3. with a board: calibration runs in QEMU price each weight encoding in instructions
//!    and measure the runtime's own flash and RAM;
//! 4. a greedy start from the table, then simulated annealing on real probe
//!    measurements (exporter bytes, planned arena, priced instructions);
//! 5. the best fitting candidates, and the hand-written default plan beside them, run
//!    as fine-tuning trials (`--jobs` local processes, or a Slurm job array);
//! 6. the most accurate trial that fits is chosen: `chosen.json` (an ordinary plan),
//!    `pareto.md`/`.json`/`.svg`, and its firmware run on the board, bit-exact.
//!
//! Every step keeps its result in the output folder, so a killed run resumes where it
//! stopped (finished trials are not run again).

mod calibration;
mod probe_setup;
mod report;
mod slurm;
mod state;
mod trials;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use sprig_compressor::auto::{
    anneal, greedy_start, pareto_front, AnnealSettings, Budget, Candidate, Estimate, Evaluated,
    Measurement, SearchSpace, Sensitivity,
};

use crate::boards::{self, Board, Kind};
use crate::firmware::{kernels, Input};
use crate::sim;
use calibration::BoardCosts;
use report::{Report, TrialRow};
use state::SearchRecord;
pub use trials::xtask_exe;
use trials::{Common, Outcome, Trial};

#[derive(clap::Args)]
pub struct Args {
    /// Model from the zoo, or a float ONNX file.
    #[arg(long, default_value = "lenet5")]
    model: String,
    /// Training data, as for `cargo xtask compress`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Pixel normalization, as for `cargo xtask compress`.
    #[arg(long)]
    normalize: Option<String>,
    /// A simulated board: its flash and RAM (memory.x) become the budget, and QEMU
    /// counts its instructions.
    #[arg(long)]
    board: Option<String>,
    /// Most bytes the packed model (`model.sprig`) may take in flash.
    #[arg(long)]
    max_flash: Option<usize>,
    /// Most peak RAM on the board: arena plus the runtime's statics and stack.
    #[arg(long)]
    max_ram: Option<usize>,
    /// Most instructions per inference on the board (needs --board).
    #[arg(long)]
    max_instructions: Option<f64>,
    /// Least deployed top-1 (percent) the chosen model must reach.
    #[arg(long)]
    min_accuracy: Option<f64>,
    /// Output folder (default: runs/auto-<model>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where trained baselines are cached (shared with `compress`).
    #[arg(long, default_value = "runs/cache")]
    cache: PathBuf,
    /// Baseline training epochs.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Fine-tuning epochs of each trial after pruning.
    #[arg(long, default_value_t = 3)]
    ft_epochs: usize,
    /// Quantization-aware fine-tuning epochs of each trial.
    #[arg(long, default_value_t = 1)]
    qat_epochs: usize,
    /// Seed of the baseline, the trials, the probe's fine-tunes and the annealing.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training images (quick runs).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Searched candidates fine-tuned as trials (besides the default plan).
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Trials run at once on this machine.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Where trials run: `local` (this machine, --jobs at a time) or `slurm` (one job
    /// array through sbatch; see docs/AUTO.md).
    #[arg(long, default_value = "local")]
    executor: String,
    /// Times a trial that failed under Slurm is submitted again.
    #[arg(long, default_value_t = 1)]
    retries: usize,
    /// Fine-tune every trial against the float baseline's soft targets (knowledge
    /// distillation, a plan's `distill`; the default plan's trial too).
    #[arg(long)]
    distill: bool,
    /// Distillation temperature (with --distill).
    #[arg(long, default_value_t = 2.0, requires = "distill")]
    distill_temperature: f64,
    /// Weight of the soft targets (with --distill).
    #[arg(long, default_value_t = 0.5, requires = "distill")]
    distill_alpha: f64,
    /// Hand-written plans to run as trials too, beside the default plan (repeatable).
    #[arg(long)]
    compare: Vec<PathBuf>,
    /// Steps (of 64 training images) each measured candidate is fine-tuned before it is
    /// scored; 0 scores one-shot, as NNI's sensitivity analysis does.
    #[arg(long, default_value_t = 50)]
    probe_steps: usize,
    /// Annealing steps.
    #[arg(long, default_value_t = 150)]
    iterations: usize,
    /// A layer choice whose probe top-1 alone falls more than this many points below
    /// the uncompressed model's is left out of the search.
    #[arg(long, default_value_t = 15.0)]
    max_drop: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let board = checked_board(&args)?;
    let stem = Path::new(&args.model)
        .file_stem()
        .map_or_else(|| args.model.clone(), |s| s.to_string_lossy().into_owned());
    let out =
        (args.out.clone()).unwrap_or_else(|| PathBuf::from("runs").join(format!("auto-{stem}")));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    state::check_settings(&out, &args)?;
    let common = Common {
        model: args.model.clone(),
        data: args.data.clone(),
        normalize: args.normalize.clone(),
        epochs: args.epochs,
        ft_epochs: args.ft_epochs,
        qat_epochs: args.qat_epochs,
        seed: args.seed,
        train_limit: args.train_limit,
        cache: args.cache.clone(),
    };

    // 1. The float baseline.
    let baseline = Trial {
        name: "baseline".into(),
        dir: out.join("baseline"),
        plan: Some(serde_json::json!({})),
    };
    let ended = trials::run_local(std::slice::from_ref(&baseline), &common, 1)?;
    let float = match &ended[0].result {
        Ok(s) => s.float_accuracy,
        Err(e) => bail!("the baseline trial failed: {e}"),
    };
    eprintln!("baseline: {:.2} % top-1 (float)", 100.0 * float);

    // 2. Sensitivity.
    let setup = probe_setup::setup(
        &args.model,
        args.data.as_deref(),
        args.normalize.as_deref(),
        args.seed,
        &baseline.dir,
        args.probe_steps,
    )?;
    let probe = &setup.probe;
    let space = probe.space().clone();
    let sensitivity: Sensitivity = state::cached(&out.join("sensitivity.json"), || {
        eprintln!(
            "sensitivity: {} layers, {} one-layer candidates, {}",
            space.layers.len(),
            (0..space.layers.len())
                .map(|i| space.choices(i).len() - 1)
                .sum::<usize>(),
            match args.probe_steps {
                0 => "one-shot".to_string(),
                n => format!("each fine-tuned {n} steps"),
            }
        );
        Ok(Sensitivity::analyse(probe)?)
    })?;
    let table = sensitivity.table(&space.layers);
    state::write(&out.join("sensitivity.md"), &table)?;
    eprintln!("{table}");

    // 3. The board's costs.
    let costs: Option<BoardCosts> = match &board {
        Some(b) => Some(state::cached_if(
            &out.join(format!("calibration-{}.json", b.name)),
            BoardCosts::is_current,
            || calibration::calibrate(probe, b, &setup.test, &out.join("calibration")),
        )?),
        None => None,
    };
    if let Some(c) = &costs {
        c.print();
    }
    let budget = budget(&args, board.as_ref(), costs.as_ref());
    eprintln!("budget: {}", budget.describe());
    let estimate = |m: &Measurement| Estimate {
        accuracy: m.accuracy,
        model_bytes: m.model_bytes,
        ram_bytes: m.arena_bytes + costs.as_ref().map_or(0, |c| c.ram_beyond_arena as usize),
        instructions: costs.as_ref().map_or(0.0, |c| c.instructions.predict(m)),
    };

    // 4. Search.
    let measure = |c: &Candidate| Ok(estimate(&probe.measure(c)?));
    let seen = search(
        &out,
        &args,
        &space,
        &sensitivity,
        &budget,
        &measure,
        &estimate,
    )?;
    let estimates: Vec<Estimate> = seen.iter().map(|e| e.estimate).collect();
    let front = pareto_front(&estimates);
    let picks = best_fitting(&seen, &budget, &space, args.trials)?;

    // 5. Trials: the picks, the hand-written default plan and any --compare plans.
    let trial_list = trial_list(&out, &args, &space, &picks)?;
    let outcomes: Vec<Outcome> = match args.executor.as_str() {
        "slurm" => slurm::run_array(&trial_list, &common, &out.join("slurm"), args.retries)?,
        _ => trials::run_local(&trial_list, &common, args.jobs)?,
    };

    // 6. Measured trials, the choice, the report, the board check.
    let rows: Vec<TrialRow> = outcomes
        .iter()
        .map(|o| TrialRow::of(o, &estimate, &budget))
        .collect();
    let chosen = (rows.iter())
        .filter(|r| r.fits && r.estimate.is_some())
        .filter(|r| {
            let deployed = r.estimate.map_or(0.0, |e| e.accuracy);
            args.min_accuracy.is_none_or(|m| 100.0 * deployed >= m)
        })
        .max_by(|a, b| {
            let acc = |r: &TrialRow| r.estimate.map_or(0.0, |e| e.accuracy);
            acc(a).total_cmp(&acc(b))
        })
        .cloned();
    let mut report = Report {
        model: args.model.clone(),
        board: board.as_ref().map(|b| b.name.clone()),
        budget: budget.clone(),
        float_accuracy: float as f64,
        space: space.clone(),
        search: seen,
        front,
        trials: rows,
        chosen: chosen.as_ref().map(|c| c.name.clone()),
        board_check: None,
    };
    let Some(chosen) = chosen else {
        report.write(&out)?;
        bail!(
            "no fine-tuned trial fits the budget{}; see {}",
            args.min_accuracy
                .map_or(String::new(), |m| format!(" at ≥ {m} % top-1")),
            out.join(report::MARKDOWN_FILE).display()
        );
    };
    let plan_text = match trial_list
        .iter()
        .find(|t| t.name == chosen.name)
        .and_then(|t| t.plan.clone())
    {
        Some(plan) => serde_json::to_string_pretty(&plan)? + "\n",
        None => sprig_compressor::compress::DEFAULT_PLAN.to_string(),
    };
    state::write(&out.join("chosen.json"), &plan_text)?;
    if let Some(b) = &board {
        report.board_check = Some(board_check(b, &chosen)?);
    }
    report.write(&out)?;
    println!("{}", report.markdown());
    println!("chosen plan: {}", out.join("chosen.json").display());
    if let Some(check) = &report.board_check {
        // The search priced instructions and RAM; the board has the last word.
        let over = check.over(&budget);
        if !over.is_empty() {
            bail!(
                "the chosen model ({}) measured over the budget on the board: {}; rerun with a \
                 tighter limit to leave room for the prediction's error",
                chosen.name,
                over.join(", ")
            );
        }
    }
    Ok(())
}

/// The board `--board` names, which must be a simulated one; and the flags that need it.
fn checked_board(args: &Args) -> anyhow::Result<Option<Board>> {
    if !["local", "slurm"].contains(&args.executor.as_str()) {
        bail!("unknown executor `{}`; use local or slurm", args.executor);
    }
    let board = match &args.board {
        Some(name) => Some(boards::find(name)?),
        None => None,
    };
    if let Some(b) = &board {
        if b.kind != Kind::Simulated {
            let simulated: Vec<String> = boards::simulated()?
                .iter()
                .map(|b| b.name.clone())
                .collect();
            bail!(
                "`{b}` is a hardware board; auto counts instructions in QEMU, so --board takes \
                 a simulated one: {}",
                simulated.join(", ")
            );
        }
    }
    if args.max_instructions.is_some() && board.is_none() {
        bail!("--max-instructions needs --board: instructions are counted on a simulated board");
    }
    Ok(board)
}

/// The search (kept in `search.json` for the same budget and steps): a greedy start
/// from the sensitivity table, then annealing on `measure`d candidates.
fn search(
    out: &Path,
    args: &Args,
    space: &SearchSpace,
    sensitivity: &Sensitivity,
    budget: &Budget,
    measure: &dyn Fn(&Candidate) -> sprig_compressor::Result<Estimate>,
    price: &dyn Fn(&Measurement) -> Estimate,
) -> anyhow::Result<Vec<Evaluated>> {
    let path = out.join("search.json");
    let kept: Option<SearchRecord> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .filter(|r: &SearchRecord| &r.budget == budget && r.iterations == args.iterations);
    if let Some(record) = kept {
        eprintln!("{}: kept from an earlier run", path.display());
        return Ok(record.seen);
    }
    let allowed = sensitivity.allowed(&space.layers, args.max_drop / 100.0);
    let start = greedy_start(&allowed, budget, &|c| sensitivity.predict(space, c, price));
    eprintln!("search: greedy start {}", start.key(space));
    let settings = AnnealSettings {
        iterations: args.iterations,
        seed: args.seed,
        ..AnnealSettings::default()
    };
    let seen = anneal(start, &allowed, budget, &settings, &mut |c| measure(c))?;
    let record = SearchRecord {
        budget: budget.clone(),
        iterations: args.iterations,
        seen,
    };
    state::write(&path, &serde_json::to_string_pretty(&record)?)?;
    Ok(record.seen)
}

/// The `n` most accurate candidates that fit; a clear error naming the nearest one
/// when none does.
fn best_fitting<'a>(
    seen: &'a [Evaluated],
    budget: &Budget,
    space: &SearchSpace,
    n: usize,
) -> anyhow::Result<Vec<&'a Evaluated>> {
    let mut fitting: Vec<&Evaluated> = seen.iter().filter(|e| budget.fits(&e.estimate)).collect();
    if fitting.is_empty() {
        let nearest = (seen.iter())
            .min_by(|a, b| {
                budget
                    .overshoot(&a.estimate)
                    .total_cmp(&budget.overshoot(&b.estimate))
            })
            .context("the search measured nothing")?;
        bail!(
            "no candidate fits the budget ({}); the nearest of {} measured is {}: model {} B, \
             RAM {} B, {:.0} instructions, {:.2} % in the probe",
            budget.describe(),
            seen.len(),
            nearest.candidate.key(space),
            nearest.estimate.model_bytes,
            nearest.estimate.ram_bytes,
            nearest.estimate.instructions,
            100.0 * nearest.estimate.accuracy
        );
    }
    fitting.sort_by(|a, b| b.estimate.accuracy.total_cmp(&a.estimate.accuracy));
    fitting.truncate(n);
    Ok(fitting)
}

/// The trials: the hand-written default plan, the `--compare` plans and the picks, each
/// distilled if `--distill` asks.
fn trial_list(
    out: &Path,
    args: &Args,
    space: &SearchSpace,
    picks: &[&Evaluated],
) -> anyhow::Result<Vec<Trial>> {
    let distill = args.distill.then(|| {
        serde_json::json!({
            "teacher": "baseline",
            "temperature": args.distill_temperature,
            "alpha": args.distill_alpha
        })
    });
    let with_distill = |mut plan: serde_json::Value| {
        if let (Some(d), Some(map)) = (&distill, plan.as_object_mut()) {
            map.insert("distill".into(), d.clone());
        }
        plan
    };
    // A trial is kept in a folder named by its plan: a resumed run with another budget
    // never takes a different plan's results.
    let trial = |name: String, plan: serde_json::Value| Trial {
        name,
        dir: out.join("trials").join(trials::folder_of(&plan)),
        plan: Some(plan),
    };
    let mut list = vec![match &distill {
        // The default plan distilled too, so that the comparison stays fair.
        Some(_) => trial(
            "default".into(),
            with_distill(serde_json::from_str(
                sprig_compressor::compress::DEFAULT_PLAN,
            )?),
        ),
        None => Trial {
            name: "default".into(),
            dir: out.join("trials/default"),
            plan: None,
        },
    }];
    for path in &args.compare {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the plan {}", path.display()))?;
        let plan: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON plan", path.display()))?;
        let stem = path
            .file_stem()
            .map_or("plan".into(), |s| s.to_string_lossy());
        list.push(trial(stem.into_owned(), plan));
    }
    for (i, pick) in picks.iter().enumerate() {
        let plan = with_distill(pick.candidate.plan(space));
        list.push(trial(format!("candidate{}", i + 1), plan));
    }
    Ok(list)
}

/// The chosen trial's firmware on `board`: bit-exact on every vector that fits, or an
/// error; its instructions and peak RAM measured.
fn board_check(board: &Board, chosen: &TrialRow) -> anyhow::Result<report::BoardCheck> {
    let input = Input {
        artifacts: chosen.dir.clone(),
        max_vectors: None,
    };
    eprintln!("the chosen model ({}) on {board}:", chosen.name);
    let result = sim::simulate(board, &input, kernels(false), Duration::from_secs(600))
        .with_context(|| format!("running the chosen model on {board}"))?;
    Ok(report::BoardCheck {
        vectors: result.vectors,
        instructions: result.per_inference,
        predicted_instructions: chosen.estimate.map_or(0.0, |e| e.instructions),
        peak_ram: result.peak_ram(),
        flash: result.size.flash() - result.size.vectors,
        board_flash: board.flash,
        board_ram: board.ram,
    })
}

/// The budget from the flags and the board (whichever is tighter).
fn budget(args: &Args, board: Option<&Board>, costs: Option<&BoardCosts>) -> Budget {
    let tighter = |a: Option<usize>, b: Option<usize>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let board_flash = board
        .zip(costs)
        .map(|(b, c)| b.flash.saturating_sub(c.code_bytes) as usize);
    Budget {
        max_model_bytes: tighter(args.max_flash, board_flash),
        max_ram_bytes: tighter(args.max_ram, board.map(|b| b.ram as usize)),
        max_instructions: args.max_instructions,
    }
}
