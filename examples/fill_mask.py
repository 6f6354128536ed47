"""Fill-mask from Python.

    python examples/fill_mask.py                                # distilbert-base-uncased from the Hub
    python examples/fill_mask.py --model ./folder-in-hub-layout # or any local checkpoint
"""

import argparse

import compactbert as cb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="distilbert-base-uncased")
    args = parser.parse_args()

    fill = cb.pipeline("fill-mask", model=args.model)
    for prediction in fill("Plants create [MASK] through photosynthesis.", top_k=5):
        print(f"{prediction['score']:.4f}  {prediction['token_str']}")

    # Several masks, several texts, and targets (scored even when they are several tokens).
    print(fill(["The [MASK] is the capital of [MASK].", "Paris is a [MASK]."], top_k=2))
    print(fill("The [MASK] barked at the mailman.", targets=["dog", "cat", "photosynthesis"]))

    # The model itself: logits only at the mask positions. The tokenizer reads text literally,
    # so map [MASK] / <mask> to this model's own mask token first (the pipeline does this itself).
    tok, model = fill.tokenizer, fill.model
    batch = tok([tok.normalize_mask_spelling("Plants create [MASK] through photosynthesis.")], return_tensors="pt")
    positions = batch["input_ids"] == tok.mask_token_id
    logits = model(**batch, positions=positions).logits  # (number of masks, vocabulary)
    print(tok.convert_ids_to_tokens(logits.topk(3).indices[0].tolist()))


if __name__ == "__main__":
    main()
