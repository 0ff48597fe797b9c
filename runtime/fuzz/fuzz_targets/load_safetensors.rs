//! Any bytes as a weights file: the loader validates them and, when they
//! pass, loads a small BERT from them (the tensors must match its config).
//! Either a clean model or a typed error; never a panic or UB.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinned_runtime::models::{BertConfig, LoadOptions, MiniLm, WeightsFile};

const CONFIG: &str = r#"{
  "vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2,
  "num_attention_heads": 4, "intermediate_size": 64,
  "max_position_embeddings": 16, "type_vocab_size": 2,
  "layer_norm_eps": 1e-12, "hidden_act": "gelu"
}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = WeightsFile::from_bytes("fuzz.safetensors", data) else {
        return;
    };
    for name in file.names() {
        let _ = file.shape(&name);
    }
    let config: BertConfig = serde_json::from_str(CONFIG).expect("fixed config");
    if let Ok(model) = MiniLm::from_weights(config, file, LoadOptions::default().max_seq(16)) {
        let _ = model.embed_ids(&[(&[1, 2, 3], &[1, 1, 1])]);
    }
});
