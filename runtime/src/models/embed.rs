//! What `pinned embed` does: load MiniLM from a directory (or
//! `PINNED_MINILM_DIR`), tokenise the texts, embed them as one batch, and
//! render the result as text or JSON (with the precision and kernel used).

use std::path::PathBuf;

use pinned_kernels::precision::Precision;

use super::minilm::{LoadOptions, MiniLm, MINILM_DIR_VAR};
use super::store::WeightPlacement;

/// The command's options.
#[derive(Clone, Debug)]
pub struct EmbedRequest {
    /// The model directory; `None` reads `PINNED_MINILM_DIR`.
    pub model_dir: Option<PathBuf>,
    pub texts: Vec<String>,
    pub precision: Precision,
    pub placement: WeightPlacement,
    pub max_seq: usize,
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    model: &'a str,
    precision: &'static str,
    kernel: &'static str,
    placement: String,
    dim: usize,
    embeddings: Vec<Item<'a>>,
}

#[derive(serde::Serialize)]
struct Item<'a> {
    text: &'a str,
    tokens: usize,
    embedding: &'a [f32],
}

/// Runs the command; returns what to print on stdout.
pub fn embed(req: &EmbedRequest) -> Result<String, Box<dyn std::error::Error>> {
    let dir = match &req.model_dir {
        Some(d) => d.clone(),
        None => std::env::var_os(MINILM_DIR_VAR)
            .map(PathBuf::from)
            .ok_or_else(|| {
                format!(
                    "no model: pass --model-dir or set {MINILM_DIR_VAR} (see .ci/fetch-minilm.sh)"
                )
            })?,
    };
    if req.texts.is_empty() {
        return Err("no text to embed".into());
    }
    let options = LoadOptions::default()
        .precision(req.precision)
        .placement(req.placement.clone())
        .max_seq(req.max_seq);
    let model = MiniLm::load_dir(&dir, options)?;
    let tok = model
        .tokenizer()
        .ok_or_else(|| format!("{} has no tokenizer.json", dir.display()))?;
    let encoded = req
        .texts
        .iter()
        .map(|t| tok.encode(t))
        .collect::<Result<Vec<_>, _>>()?;
    let batch: Vec<(&[u32], &[u32])> = encoded.iter().map(|e| (&e.ids[..], &e.mask[..])).collect();
    let vectors = model.embed_ids(&batch)?;
    let report = Report {
        model: crate::Model::name(&model),
        precision: model.precision().name(),
        kernel: model.kernel_path(),
        placement: model.placement().to_string(),
        dim: model.hidden(),
        embeddings: req
            .texts
            .iter()
            .zip(&encoded)
            .zip(&vectors)
            .map(|((text, e), v)| Item {
                text,
                tokens: e.ids.len(),
                embedding: v,
            })
            .collect(),
    };
    if req.json {
        return Ok(format!("{}\n", serde_json::to_string(&report)?));
    }
    let mut out = format!(
        "# {} ({} weights on {}, placement {}), {} dimensions\n",
        report.model, report.precision, report.kernel, report.placement, report.dim
    );
    for item in &report.embeddings {
        let values: Vec<String> = item.embedding.iter().map(|v| format!("{v:.6}")).collect();
        out.push_str(&format!(
            "{} ({} tokens)\n{}\n",
            item.text,
            item.tokens,
            values.join(" ")
        ));
    }
    Ok(out)
}
