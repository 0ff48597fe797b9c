//! A runtime described as data: partitions and their models, from TOML or
//! JSON. The C ABI's `pinned_runtime_new_from_config` and Rust hosts share it.
//!
//! ```toml
//! [[partition]]
//! name = "mlp"
//! cpus = "0-1"            # taskset/numactl lists, "all", "node:0"
//! placement = "local"     # os | local | bind:0 | preferred:1 | interleave:0-1 | replicate
//! wait = "park:50"        # spin | yield:<us> | park:<us>
//! workers = 2             # 0 = one per CPU
//! max_batch = 1
//! max_wait_us = 0
//! pin = true
//! [partition.model]
//! kind = "mlp"
//! widths = [1024, 4096, 1024, 4096, 1024]
//! seed = 1
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use pinned_kernels::precision::Precision;
use pinned_runtime::models::{LoadError, LoadOptions, MiniLm, Mlp, WeightPlacement};
use pinned_runtime::{
    BatchPolicy, CpuContext, Model, ModelError, PartitionConfig, Placement, Runtime, RuntimeConfig,
    RuntimeError, WaitStrategy, DEFAULT_MLP,
};

/// Why a configuration was refused; parse errors say where (line, column).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("config is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("partition '{partition}': {what}")]
    Invalid { partition: String, what: String },
    #[error("partition '{partition}': building the model: {source}")]
    Model {
        partition: String,
        source: ModelError,
    },
    #[error("partition '{partition}': loading the model: {source}")]
    Load {
        partition: String,
        source: Box<LoadError>,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Every partition of a runtime.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    #[serde(default, rename = "partition")]
    pub partitions: Vec<PartitionSpec>,
}

/// One partition: where it runs, how it waits and batches, and its model.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    pub name: String,
    #[serde(default = "all_cpus")]
    pub cpus: String,
    #[serde(default)]
    pub placement: Option<String>,
    #[serde(default)]
    pub wait: Option<String>,
    #[serde(default)]
    pub workers: usize,
    #[serde(default = "one")]
    pub max_batch: usize,
    #[serde(default)]
    pub max_wait_us: u32,
    #[serde(default)]
    pub slots: usize,
    #[serde(default = "yes")]
    pub pin: bool,
    pub model: ModelSpec,
}

/// Which model a partition serves. File-backed models are converted and
/// packed into memory placed as the partition's placement says (bound to
/// its node, interleaved, or one copy per node).
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ModelSpec {
    /// The built-in dense MLP with deterministic weights, packed (f32 by
    /// default, or `precision`) into memory placed like a file-backed
    /// model's; a request alone in flight runs on a team of the
    /// partition's workers' count (one per CPU for 0), pinned to its CPUs
    /// when the partition pins.
    Mlp {
        #[serde(default)]
        widths: Option<Vec<usize>>,
        #[serde(default = "one_u64")]
        seed: u64,
        #[serde(default)]
        precision: Option<String>,
    },
    /// A BERT encoder such as all-MiniLM-L6-v2: a directory with
    /// `config.json` and `model.safetensors`.
    Minilm {
        dir: PathBuf,
        /// `f32` (default), `bf16` or `int8`.
        #[serde(default)]
        precision: Option<String>,
        /// Longest request in tokens (default 512).
        #[serde(default)]
        max_seq: Option<usize>,
    },
    /// A dense MLP from a JSON manifest naming tensors of a safetensors file.
    Manifest {
        path: PathBuf,
        #[serde(default)]
        precision: Option<String>,
    },
}

fn all_cpus() -> String {
    "all".to_owned()
}
fn one() -> usize {
    1
}
fn one_u64() -> u64 {
    1
}
fn yes() -> bool {
    true
}

impl RuntimeSpec {
    /// Parses JSON (text starting with `{`) or TOML.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        if text.trim_start().starts_with('{') {
            Ok(serde_json::from_str(text)?)
        } else {
            Ok(toml::from_str(text)?)
        }
    }

    /// Starts a runtime on the live machine with every partition running.
    pub fn start(&self) -> Result<Runtime, ConfigError> {
        let mut runtime = Runtime::new(RuntimeConfig::default())?;
        for part in &self.partitions {
            let config = part.partition_config()?;
            let model = part.model.build(&config, runtime.cpu_context())?;
            runtime.add_partition(config, model)?;
        }
        Ok(runtime)
    }
}

impl PartitionSpec {
    /// The runtime's partition configuration; refuses unknown spellings.
    pub fn partition_config(&self) -> Result<PartitionConfig, ConfigError> {
        let invalid = |what: String| ConfigError::Invalid {
            partition: self.name.clone(),
            what,
        };
        let mut config = PartitionConfig::new(self.name.clone(), self.cpus.clone());
        if let Some(text) = &self.placement {
            config.placement = Placement::parse(text).ok_or_else(|| {
                invalid(format!(
                    "placement '{text}' is not one of os, local, bind:LIST, preferred:NODE, \
                     interleave:LIST, replicate"
                ))
            })?;
        }
        if let Some(text) = &self.wait {
            config.wait = WaitStrategy::parse(text).ok_or_else(|| {
                invalid(format!(
                    "wait '{text}' is not one of spin, yield:<us>, park:<us>"
                ))
            })?;
        }
        if self.max_batch == 0 {
            return Err(invalid("max_batch must be at least 1".to_owned()));
        }
        config.batch = BatchPolicy {
            max_batch: self.max_batch,
            max_wait_us: self.max_wait_us,
        };
        config.workers = self.workers;
        config.slots = self.slots;
        config.pin = self.pin;
        Ok(config)
    }
}

impl ModelSpec {
    /// Loads the model for the partition `config` describes, its weights
    /// placed after the partition's placement and the nodes of its CPUs.
    pub fn build(
        &self,
        config: &PartitionConfig,
        ctx: &CpuContext,
    ) -> Result<Arc<dyn Model>, ConfigError> {
        let partition = || config.name.clone();
        let precision = |text: &Option<String>| -> Result<Precision, ConfigError> {
            text.as_deref()
                .map_or(Ok(Precision::F32), Precision::parse)
                .map_err(|e| ConfigError::Invalid {
                    partition: partition(),
                    what: e.to_string(),
                })
        };
        let cpus = ctx
            .parse(&config.cpus)
            .map_err(|source| RuntimeError::CpuSet {
                partition: partition(),
                source,
            })?;
        let weights = WeightPlacement::for_partition(&config.placement, &ctx.nodes_of(&cpus));
        // As the harness: a request alone in flight may use as many threads
        // as the partition has workers (one per CPU for 0), the helpers
        // pinned to the partition's CPUs when it pins.
        let threads = if config.workers > 0 {
            config.workers
        } else {
            cpus.len()
        };
        let team_cpus = config.pin.then_some(&cpus);
        let load = |source: LoadError| ConfigError::Load {
            partition: partition(),
            source: Box::new(source),
        };
        let team_options = |options: LoadOptions| match team_cpus {
            Some(cpus) => options.threads(threads).cpus(cpus.clone()),
            None => options.threads(threads),
        };
        Ok(match self {
            Self::Mlp {
                widths,
                seed,
                precision: p,
            } => {
                let widths = widths.as_deref().unwrap_or(&DEFAULT_MLP);
                let options = team_options(LoadOptions::default())
                    .precision(precision(p)?)
                    .placement(weights);
                Arc::new(Mlp::generated(widths, *seed, options).map_err(load)?)
            }
            Self::Minilm {
                dir,
                precision: p,
                max_seq,
            } => {
                let options = team_options(LoadOptions::default())
                    .precision(precision(p)?)
                    .placement(weights)
                    .max_seq(max_seq.unwrap_or(512));
                Arc::new(MiniLm::load_dir(dir, options).map_err(load)?)
            }
            Self::Manifest { path, precision: p } => {
                let options = team_options(LoadOptions::default())
                    .precision(precision(p)?)
                    .placement(weights);
                Arc::new(Mlp::load(path, options).map_err(load)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[[partition]]
name = "a"
cpus = "0"
wait = "spin"
[partition.model]
kind = "mlp"
widths = [8, 16, 4]
"#;

    #[test]
    fn toml_and_json_describe_the_same_thing() {
        let t = RuntimeSpec::parse(TOML).unwrap();
        let j = RuntimeSpec::parse(
            r#"{"partition": [{"name": "a", "cpus": "0", "wait": "spin",
                "model": {"kind": "mlp", "widths": [8, 16, 4]}}]}"#,
        )
        .unwrap();
        assert_eq!(format!("{t:?}"), format!("{j:?}"));
        let config = t.partitions[0].partition_config().unwrap();
        assert_eq!(config.wait, WaitStrategy::Spin);
        assert!(config.pin);
    }

    #[test]
    fn errors_say_where() {
        let err = RuntimeSpec::parse("[[partition]]\nname = \"a\"\nbogus = 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 3") || text.contains("bogus"), "{text}");
        let err = RuntimeSpec::parse("{\"partition\": [}").unwrap_err();
        assert!(err.to_string().contains("column"), "{err}");
    }

    #[test]
    fn bad_spellings_are_refused_naming_the_partition() {
        let mut spec = RuntimeSpec::parse(TOML).unwrap();
        spec.partitions[0].placement = Some("elsewhere".into());
        let err = spec.partitions[0]
            .partition_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("'a'") && err.contains("elsewhere"), "{err}");
    }
}
