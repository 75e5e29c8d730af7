"""``index``: build a reference index (:func:`evaluators.index.build_index`)."""

from __future__ import annotations

import argparse

from .args import add_dtype_argument, add_options, add_preprocess_argument, int_range


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "index",
        help="build a reference index (features, nearest neighbours, per-pathology stats, UMAP map)",
        description=(
            "Encode a reference (training) set once through the feature cache and write a reference index: "
            "a FAISS index over all images for memorisation search, per-pathology feature statistics for "
            "fidelity, and a UMAP map. Run under `accelerate launch -m evaluators index ...` to shard the "
            "encoding across processes, GPUs or nodes."
        ),
    )
    p.set_defaults(func=_cli_index)
    add_options(p, _index_options)


def _index_options(p: argparse.ArgumentParser) -> None:
    from ..index import INDEX_TYPES

    p.add_argument("--reference", required=True, help="reference set: folder, CSV, or 'demo'; PATH@SPLIT selects a split")
    p.add_argument("--images-root", default=None, help="folder that relative image paths in a CSV are under")
    p.add_argument("--encoder", default=None, help="encoder name (default: the best available; see `encoders`)")
    p.add_argument("--weights", default=None, help="encoder weights (file or folder) instead of the default location")
    p.add_argument("--out", required=True, help="output folder for the index")
    p.add_argument("--index-type", choices=INDEX_TYPES, default="flat",
                   help="flat = exact inner product (default); ivf / hnsw = approximate, for millions of images")
    p.add_argument("--no-umap", action="store_true", help="skip fitting the UMAP map")
    p.add_argument("--batch-size", type=int_range(1), default=64, help="images per encoder forward pass (default 64)")
    p.add_argument("--workers", type=int_range(0), default=None, help="DataLoader workers (default: up to 4 for large sets)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    add_dtype_argument(p)
    add_preprocess_argument(p)
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and list them instead of stopping")
    p.add_argument("--seed", type=int, default=0, help="seed for UMAP and IVF training (default 0)")


def _cli_index(args: argparse.Namespace) -> int:
    from ..encoders import default_encoder, load_encoder
    from ..imagesets import load_image_set
    from ..index import build_index
    from ..settings import select_device

    image_set = load_image_set(args.reference, images_root=args.images_root, skip_bad=args.skip_bad)
    name = args.encoder or default_encoder()
    encoder = load_encoder(name, weights=args.weights, device=select_device(args.device), dtype=args.encoder_dtype,
                           preprocess=args.preprocess)
    index = build_index(
        image_set,
        encoder,
        args.out,
        index_type=args.index_type,
        umap=not args.no_umap,
        batch_size=args.batch_size,
        num_workers=args.workers,
        skip_bad=args.skip_bad,
        seed=args.seed,
    )
    if index is not None:
        t = index.info["timings_s"]
        print(
            f"indexed {len(index)} images with {name} ({index.info['dim']}-d, {encoder.preprocess_mode} "
            f"preprocessing) -> {index.dir}\n"
            f"encoder passes: {index.info['forward_images']} images; features {t['features']} s, "
            f"UMAP {t['umap']} s, total {t['total']} s"
        )
        for bad in index.info["skipped"]:
            print(f"skipped: {bad}")
    return 0
