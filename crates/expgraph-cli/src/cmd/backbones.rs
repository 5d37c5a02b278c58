//! `expgraph backbones`: the architectures `--backbone` accepts, with their taps, channels and
//! geometry (no weights needed).

use crate::summary::Summary;
use expgraph_features::Architecture;

/// Arguments of `expgraph backbones`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this architecture (`vgg16`, `resnet18` … `resnet152`).
    #[arg(value_parser = expgraph_features::BACKBONE_CHOICES[1..].to_vec())]
    pub name: Option<String>,
}

/// The stage of a per-block tap `layerN.B` (`Some("layerN")`), `None` for any other tap.
fn block_stage(tap: &str) -> Option<&str> {
    let (stage, block) = tap.rsplit_once('.')?;
    (stage.starts_with("layer") && !block.is_empty() && block.bytes().all(|b| b.is_ascii_digit())).then_some(stage)
}

/// Run `expgraph backbones`.
pub fn run(args: Args) -> anyhow::Result<Summary> {
    let architectures: Vec<Architecture> =
        Architecture::ALL.into_iter().filter(|a| args.name.as_deref().is_none_or(|n| n == a.name())).collect();
    let mut human = String::new();
    let mut json = Vec::new();
    for a in architectures {
        let taps = a.describe()?;
        let defaults = a.default_layers();
        human.push_str(&format!("{a} (default layers: {})\n", defaults.join(", ")));
        human.push_str(&format!(
            "  {:<22} {:>8} {:>6} {:>7} {:>13} {:>16}\n",
            "tap", "channels", "map", "stride", "first centre", "receptive field"
        ));
        // Per-block taps (`layerN.B`) of a stage on one line: names and receptive fields as ranges.
        let mut i = 0;
        while i < taps.len() {
            let t = &taps[i];
            let stage = block_stage(&t.name);
            let mut j = i + 1;
            while stage.is_some() && j < taps.len() && block_stage(&taps[j].name) == stage {
                j += 1;
            }
            let last = &taps[j - 1];
            let (name, field) = if j - i > 1 {
                (
                    format!("{} … {}", t.name, last.name),
                    format!("{} … {}", t.geometry.receptive_field, last.geometry.receptive_field),
                )
            } else {
                (t.name.clone(), t.geometry.receptive_field.to_string())
            };
            human.push_str(&format!(
                "  {:<22} {:>8} {:>6} {:>7} {:>13} {:>16}\n",
                name,
                t.channels,
                format!("{0}×{0}", t.map_size),
                t.geometry.stride,
                t.geometry.first_centre,
                field
            ));
            i = j;
        }
        json.push(serde_json::json!({
            "name": a.name(),
            "default_layers": defaults,
            "taps": taps.iter().map(|t| serde_json::json!({
                "name": t.name,
                "channels": t.channels,
                "map_size": t.map_size,
                "stride": t.geometry.stride,
                "first_centre": t.geometry.first_centre,
                "receptive_field": t.geometry.receptive_field,
            })).collect::<Vec<_>>(),
        }));
    }
    human.push_str(
        "geometry for a 224×224 input, in input pixels (1-based centres); weights: torchvision/timm \
         safetensors (`features.N.*` for vgg16; `conv1.*`, `layerS.B.*` for resnet*), `--backbone auto` \
         tells them apart",
    );
    Ok(Summary::new(
        human,
        serde_json::json!({ "input_size": expgraph_backbone::REFERENCE_INPUT_SIZE, "backbones": json }),
    ))
}
