use sprig_compressor::{data, models::Model, train};
fn main() -> anyhow::Result<()> {
    let src = data::resolve(None)?;
    let (tr, te) = src.load()?;
    let n: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(6400);
    let epochs: usize = std::env::args().nth(3).map(|s| s.parse().unwrap()).unwrap_or(1);
    let name = std::env::args().nth(1).unwrap_or("lenet5".into());
    let tr = tr.subset(n);
    let mut m = Model::new(&name, 10, &candle_core::Device::Cpu, 1)?;
    let mut cfg = train::TrainConfig::new(epochs, 1);
    cfg.progress = true;
    let r = train::train(&mut m, &tr, &te, &cfg, None)?;
    println!("{:?}", r.history);
    Ok(())
}
