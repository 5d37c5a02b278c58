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
            "  {:<16} {:>8} {:>6} {:>7} {:>13} {:>16}\n",
            "tap", "channels", "map", "stride", "first centre", "receptive field"
        ));
        for t in &taps {
            human.push_str(&format!(
                "  {:<16} {:>8} {:>6} {:>7} {:>13} {:>16}\n",
                t.name,
                t.channels,
                format!("{0}×{0}", t.map_size),
                t.geometry.stride,
                t.geometry.first_centre,
                t.geometry.receptive_field
            ));
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
