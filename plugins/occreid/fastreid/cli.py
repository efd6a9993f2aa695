"""``occreid index`` / ``occreid search``: a gallery index on disk and retrieval against it;
``occreid masks``: the masks of a part-based model (PAN) drawn over images, like PAN's Fig. 4;
``occreid saliency``: Grad-CAM maps of any model's embeddings, each image beside its occluded copy (the
occlusion simulator), like Chakraborty et al.'s Fig. 2; ``occreid part-maps``: AMD-Net's part maps, visibility and per-part distances to
the top gallery matches; ``occreid parse``: AMD-Net's human-parsing labels
(MediaPipe BlazePose, :mod:`occreid.data.parsing`), resumable, with an overlay picture.

    occreid index  --config-file CFG [--weights W] (--dataset NAME [--split gallery] | --folder DIR)
                   (--out IDX | --backend milvus --uri URI [--collection NAME] [--token T]) [--append | --overwrite]
    occreid search --config-file CFG [--weights W] (--index IDX | --backend milvus --uri URI [--collection NAME])
                   (--image IMG | --folder DIR | --dataset NAME [--split query] [--num-queries N])
                   [--topk 10] [--rerank] [--out OUTDIR]

    occreid masks  --config-file CFG [--weights W] (--dataset NAME [--split query] [--num-queries 12] | --folder DIR)
                   [--num-masks 3] [--out masks.png]
    occreid saliency --config-file CFG [--weights W] (--dataset NAME [--num-queries 8] | --folder DIR)
                   [--occlude-area 0.305] [--fill mean] [--out saliency.png]
    occreid part-maps --config-file CFG [--weights W] --dataset NAME [--num-queries 8] [--gallery-size 300]
                   [--topk 3] [--out part_maps.png]
    occreid parse  IMAGE_DIR --out LABEL_DIR [--image-root DIR] [--limit N] [--overlay PNG --num 16]

Features come from a FastReID model built from the config (plus occreid's registrations) and
``--weights`` (a trained checkpoint; without it, the backbone's ``PRETRAIN_PATH``). The index stores
a hash of the model (config MODEL section + weights file); searching with another model, or with
features of another size, is an error. ``search`` prints the top-k (path, distance, pid/camid) and
writes ``rank_list.png`` and ``rank_list.html`` into ``--out``. ``--backend milvus`` keeps the gallery in a
Milvus collection (:mod:`occreid.evaluation.milvus_index`): ``--uri gallery.db`` is a milvus-lite file,
``--uri http://host:19530`` a server or cluster (``--token`` or ``$MILVUS_TOKEN`` for authentication).
"""

import argparse
import hashlib
import logging
import os
import sys
import warnings

import torch

warnings.filterwarnings("ignore", message="TypedStorage is deprecated")

logger = logging.getLogger("occreid.cli")


def _setup_cfg(args):
    import occreid.fastreid  # noqa: F401
    from fastreid.config import get_cfg
    from occreid.fastreid import add_occreid_config, expand_config_paths

    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"config file not found: {args.config_file} (--config-file)")
    cfg = add_occreid_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.weights:
        cfg.MODEL.WEIGHTS = args.weights
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.WEIGHTS:
        cfg.MODEL.BACKBONE.PRETRAIN = False
    expand_config_paths(cfg)
    cfg.freeze()
    return cfg


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_hash(cfg):
    """sha256 of the config's MODEL section (paths and device left out) and of the weights file."""
    m = cfg.MODEL.clone()
    m.defrost()
    weights = m.WEIGHTS or (m.BACKBONE.PRETRAIN_PATH if m.BACKBONE.PRETRAIN else "")
    m.WEIGHTS, m.DEVICE, m.BACKBONE.PRETRAIN_PATH = "", "", ""
    h = hashlib.sha256(m.dump().encode())
    h.update((_file_sha256(weights) if weights else "random-init").encode())
    return h.hexdigest()


def build_feature_model(cfg):
    """The FastReID model of ``cfg`` in eval mode, with ``MODEL.WEIGHTS`` checked and loaded."""
    from fastreid.modeling import build_model
    from occreid.fastreid.trainer import channels_last_enabled, load_checked_weights, use_channels_last

    model = build_model(cfg)
    if channels_last_enabled(cfg):
        use_channels_last(model)
    if cfg.MODEL.WEIGHTS:
        load_checked_weights(model, cfg.MODEL.WEIGHTS)
    return model.eval()


class _ReadOrReport(torch.utils.data.Dataset):
    """A ReIDImageDataset whose unreadable images come back as ``{"bad": path, "error": message}`` instead of an
    exception inside a loader worker (whose traceback would bury the file name)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        try:
            return self.ds[i]
        except Exception as e:  # noqa: BLE001 - reported per file in the main process
            return {"bad": self.ds.img_items[i][0], "error": str(e.__cause__ or e).splitlines()[0][:200], "index": i}


def _collate(batch):
    from fastreid.data.build import fast_batch_collator
    good = [b for b in batch if "bad" not in b]
    return (fast_batch_collator(good) if good else None), [b for b in batch if "bad" in b]


@torch.no_grad()
def extract_features_checked(cfg, model, items, batch_size=64, num_workers=2, desc="features", skip_bad=False):
    """Features of ``items`` (``(path, pid, camid)``), with a progress bar; the model runs channels-last when
    ``MODEL.CHANNELS_LAST`` says so.

    Returns: ``(features (n', D) float32, kept items (n'), skipped paths)``; n' = n unless ``skip_bad``.
    Raises: RuntimeError naming the first image that cannot be read (``skip_bad=False``)."""
    from occreid.fastreid import ReIDImageDataset
    from occreid.fastreid.trainer import build_test_transforms
    from tqdm import tqdm

    ds = _ReadOrReport(ReIDImageDataset(items, build_test_transforms(cfg), relabel=False))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    feats, bad = [], {}
    for batch, failed in tqdm(loader, desc=desc, unit="batch"):
        for f in failed:
            if not skip_bad:
                raise RuntimeError(f"cannot read image {f['bad']} ({f['error']}); --skip-bad-images skips such "
                                   f"files and lists them")
            bad[f["index"]] = f["bad"]
        if batch is not None:
            batch["images"] = batch["images"].to(model.device)
            feats.append(model(batch).float().cpu())
    if not feats:
        raise ValueError(f"no readable image among the {len(items)} given")
    kept = [it for i, it in enumerate(items) if i not in bad]
    return torch.cat(feats).numpy(), kept, [bad[i] for i in sorted(bad)]


def extract_features(cfg, model, items, batch_size=64, num_workers=2, desc="features"):
    """(n, D) float32 features of ``items`` (``(path, pid, camid)``), with a progress bar. Raises RuntimeError
    naming an image that cannot be read."""
    return extract_features_checked(cfg, model, items, batch_size, num_workers, desc)[0]


def _extract(args, cfg, model, items, desc):
    feats, kept, skipped = extract_features_checked(cfg, model, items, args.batch_size, args.num_workers, desc,
                                                    skip_bad=getattr(args, "skip_bad_images", False))
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s): " + ", ".join(skipped[:10])
              + (" ..." if len(skipped) > 10 else ""), file=sys.stderr)
    return feats, kept


def _items(args, cfg, default_split):
    from occreid.data import list_images
    from occreid.data.common import DatasetFormatError, parse_pid_camid

    if getattr(args, "image", None):
        if not os.path.isfile(args.image):
            raise FileNotFoundError(f"query image not found: {args.image}")
        paths = [args.image]
    elif args.folder:
        paths = list_images(args.folder)
    elif args.dataset:
        from occreid.fastreid.trainer import OccReIDTrainer
        split = args.split or default_split
        if split not in ("query", "gallery"):
            raise ValueError(f"--split must be query or gallery, got {split!r}")
        data = OccReIDTrainer._load_dataset(cfg, args.dataset)
        items = list(data.query if split == "query" else data.gallery)
        n = getattr(args, "num_queries", 0)
        if n:
            items = items[:: max(1, len(items) // n)][:n]  # spread over identities, deterministic
        return items
    else:
        raise ValueError("give --image, --folder or --dataset")
    items = []
    for p in paths:
        try:
            pid, camid = parse_pid_camid(p)
        except DatasetFormatError:
            pid, camid = -1, -1  # free images: no ground truth
        items.append((p, pid, camid))
    return items


def _backend_location(args, folder):
    """The index location of ``args``: the folder (faiss) or the collection name (milvus); checks the URI."""
    if args.backend == "milvus":
        if not args.uri:
            raise ValueError("--backend milvus needs --uri: a milvus-lite file (gallery.db) or http://host:19530")
        return args.collection
    if not folder:
        flag = "--out" if args.command == "index" else "--index"
        raise ValueError(f"--backend faiss needs {flag} (the index folder)")
    return folder


def cmd_index(args):
    from occreid.evaluation.gallery import GalleryIndex, write_gallery_index

    location = _backend_location(args, args.out)
    if args.append and args.overwrite:
        raise ValueError("give --append or --overwrite, not both")
    if_exists = "append" if args.append else "overwrite" if args.overwrite else None
    if args.backend == "faiss" and if_exists is None:   # fail before extracting features
        from occreid.evaluation.gallery import index_exists
        if index_exists(location):
            raise FileExistsError(f"gallery index {location} already exists: --append adds to it, --overwrite "
                                  f"replaces it")
    if args.backend == "milvus" and if_exists is None:  # fail before extracting features
        from occreid.evaluation.milvus_index import connect, safe_uri
        client = connect(args.uri, args.token)
        exists = client.has_collection(location)
        client.close()
        if exists:
            raise FileExistsError(f"collection {location!r} at {safe_uri(args.uri)} already exists: "
                                  f"--append adds to it, --overwrite replaces it")
    cfg = _setup_cfg(args)
    items = _items(args, cfg, "gallery")
    model = build_feature_model(cfg)
    feats, items = _extract(args, cfg, model, items, "gallery features")
    gi = GalleryIndex(feats, [i[0] for i in items], [int(i[1]) for i in items], [int(i[2]) for i in items],
                      metric="cosine" if cfg.TEST.METRIC == "cosine" else "euclidean",
                      model_hash=model_hash(cfg),
                      info={"config": os.path.abspath(args.config_file),
                            "weights": cfg.MODEL.WEIGHTS or cfg.MODEL.BACKBONE.PRETRAIN_PATH,
                            "source": args.dataset or args.folder, "split": args.split or "gallery"})
    index = write_gallery_index(gi, location, backend=args.backend, uri=args.uri, token=args.token,
                                if_exists=if_exists)
    where = index.where if args.backend == "milvus" else args.out
    print(f"indexed {len(items)} images ({gi.dim}-d, {gi.metric}) into {where}"
          + (f" ({len(index)} in all)" if args.backend == "milvus" else ""))


def cmd_search(args):
    from occreid.evaluation.gallery import open_gallery_index
    from occreid.evaluation.visualize import draw_rank_lists, match_kind, write_rank_html

    from occreid.evaluation.gallery import check_topk
    check_topk(args.topk)
    location = _backend_location(args, args.index)
    cfg = _setup_cfg(args)
    model = build_feature_model(cfg)   # a bad --weights file is reported as such, before the index's model check
    gi = open_gallery_index(location, backend=args.backend, uri=args.uri, token=args.token,
                            expected_model_hash=model_hash(cfg))
    items = _items(args, cfg, "query")
    feats, items = _extract(args, cfg, model, items, "query features")
    results = gi.search(feats, topk=args.topk, rerank=args.rerank)
    queries = [{"path": p, "pid": int(pid), "camid": int(cam)} for p, pid, cam in items]
    hits = []
    for q, res in zip(queries, results):
        print(f"query {q['path']} (pid {q['pid']}, camid {q['camid']})")
        for rank, (p, d, pid, cam) in enumerate(zip(res.paths, res.distances, res.pids, res.camids), 1):
            kind = match_kind(q["pid"], q["camid"], pid, cam)
            print(f"  {rank:3d}  {max(float(d), 0.0):.4f}  pid {pid:5d}  camid {cam:3d}  {kind:7s}  {p}")
        kinds = [match_kind(q["pid"], q["camid"], pid, cam) for pid, cam in zip(res.pids, res.camids)]
        valid = [k for k in kinds if k != "junk"]
        if valid and valid[0] != "unknown":
            hits.append(valid[0] == "match")
    if hits:
        print(f"top-1 (same-camera matches skipped) correct for {sum(hits)}/{len(hits)} queries")
    os.makedirs(args.out, exist_ok=True)
    png = draw_rank_lists(queries, results, os.path.join(args.out, "rank_list.png"))
    page = write_rank_html(queries, results, os.path.join(args.out, "rank_list.html"))
    print(f"wrote {png} and {page}")


@torch.no_grad()
def cmd_masks(args):
    from fastreid.data.build import fast_batch_collator
    from occreid.fastreid.trainer import build_test_transforms
    from occreid.evaluation.masks import draw_mask_grid
    from occreid.fastreid import ReIDImageDataset

    cfg = _setup_cfg(args)
    model = build_feature_model(cfg)
    if not hasattr(model, "masks"):
        raise ValueError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} has no masks (PAN has)")
    items = _items(args, cfg, default_split="query")
    if not getattr(args, "num_queries", 0):
        items = items[:12]
    ds = ReIDImageDataset(items, build_test_transforms(cfg), relabel=False)
    batch = fast_batch_collator([ds[i] for i in range(len(ds))])
    batch["images"] = batch["images"].to(model.device)
    masks = model.masks(batch).float().cpu().numpy()
    out = draw_mask_grid([p for p, _, _ in items], masks, args.out, num_masks=args.num_masks,
                         captions=[f"pid {pid}" for _, pid, _ in items])
    print(f"{len(items)} images, {masks.shape[1]} masks of {masks.shape[2]} x {masks.shape[3]} -> {out}")


def cmd_saliency(args):
    from fastreid.data.build import fast_batch_collator
    from occreid.fastreid.trainer import build_test_transforms
    from PIL import Image
    from occreid.data.occlusion import OcclusionSimulator
    from occreid.evaluation.saliency import draw_saliency_grid, grad_cam_maps
    from occreid.fastreid import ReIDImageDataset

    cfg = _setup_cfg(args)
    model = build_feature_model(cfg)
    items = _items(args, cfg, default_split="query")
    if not getattr(args, "num_queries", 0):
        items = items[:8]
    pil, names = [], []
    sim = OcclusionSimulator(float(args.occlude_area), args.fill, seed=0) if args.occlude_area > 0 else None
    for path, pid, _ in items:
        try:
            img = Image.open(path).convert("RGB")
        except OSError as e:
            raise OSError(f"cannot read image {path}: {e}") from e
        pil.append(img)
        names.append(f"pid {pid}")
        if sim is not None:
            pil.append(sim.occlude_path_deterministic(os.path.basename(path), img))
            names.append("occluded")
    transform = build_test_transforms(cfg)
    images = torch.stack([transform(im) for im in pil]).to(model.device)
    maps = grad_cam_maps(model, images)
    out = draw_saliency_grid(pil, maps, args.out, captions=names, columns_per_group=2 if sim else 1)
    print(f"{len(items)} images{' and their occluded copies' if sim else ''}: Grad-CAM at the last backbone "
          f"stage -> {out}")


@torch.no_grad()
def cmd_part_maps(args):
    import random
    from fastreid.data.build import fast_batch_collator
    from occreid.fastreid.trainer import build_test_transforms
    from occreid.evaluation.part_maps import draw_part_maps, part_match_rows
    from occreid.fastreid import ReIDImageDataset
    from occreid.fastreid.amdnet import amd_distance
    from occreid.fastreid.trainer import OccReIDTrainer

    cfg = _setup_cfg(args)
    model = build_feature_model(cfg)
    if not hasattr(model, "attention_maps") or model.heads.pagb is None:
        raise ValueError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} has no part attention maps "
                         f"(AMDNet with MODEL.AMD.PART_ATTENTION True has)")
    queries = _items(args, cfg, default_split="query")
    if not getattr(args, "num_queries", 0):
        queries = queries[:8]
    gallery = []
    if args.dataset:   # the queries' own gallery images plus a seeded sample of the others
        data = OccReIDTrainer._load_dataset(cfg, args.dataset)
        pids = {pid for _, pid, _ in queries}
        own = [g for g in data.gallery if g[1] in pids]
        rest = [g for g in data.gallery if g[1] not in pids]
        gallery = own + random.Random(0).sample(rest, min(args.gallery_size, len(rest)))
    ds = ReIDImageDataset(queries, build_test_transforms(cfg), relabel=False)
    batch = fast_batch_collator([ds[i] for i in range(len(ds))])
    batch["images"] = batch["images"].to(model.device)
    maps = model.attention_maps(dict(batch, images=batch["images"].clone()))
    q_feats = model(batch).float().cpu().numpy()
    rows, g_caps = [], None
    if gallery:
        g_feats = extract_features(cfg, model, gallery, args.batch_size, args.num_workers, desc="gallery features")
        a = cfg.MODEL.AMD
        dist = amd_distance(q_feats, g_feats, a.NUM_PARTS, a.TEST_DISTANCE, a.BETA_HEAD)
        for i, (_, qpid, qcam) in enumerate(queries):   # the standard protocol: same pid and camera is junk
            for j, (_, gpid, gcam) in enumerate(gallery):
                if gpid == qpid and gcam == qcam:
                    dist[i, j] = float("inf")
        rows = part_match_rows(q_feats, g_feats, dist, a.NUM_PARTS, topk=args.topk)
        g_caps = [f"pid {pid}" for _, pid, _ in gallery]
    out = draw_part_maps([p for p, _, _ in queries], maps["parts"].cpu().numpy(), maps["visibility"].cpu().numpy(),
                         args.out, gallery=[p for p, _, _ in gallery], matches=rows,
                         captions=[f"pid {pid}" for _, pid, _ in queries], gallery_captions=g_caps,
                         query_pids=[pid for _, pid, _ in queries], gallery_pids=[pid for _, pid, _ in gallery])
    print(f"{len(queries)} queries against {len(gallery)} gallery images: part maps, visibility, top-{args.topk} "
          f"matches with per-part distances -> {out}")


def cmd_parse(args):
    from occreid.data.parsing import ParsingLabels, draw_label_grid, generate_labels, list_image_files

    image_root = args.image_root or args.image_dir
    counts = generate_labels(args.image_dir, args.out, image_root=image_root, limit=args.limit,
                             segmenter=args.segmenter)
    print(f"processed {counts['total'] - counts['skipped']} images ({counts['skipped']} already done): "
          f"{counts['ok']} labelled, {counts['no_person']} no person, {counts['corrupt']} corrupt")
    labels = ParsingLabels(args.out, image_root)
    paths = list_image_files(args.image_dir)
    if args.limit is not None:
        paths = paths[:max(0, args.limit)]
    if args.overlay and paths:
        shown = paths[:: max(1, len(paths) // max(1, args.num))][: args.num]
        print(f"wrote {draw_label_grid(shown, labels, args.overlay)}")
    n, total = labels.coverage(paths)
    print(f"coverage: {n} / {total} images labelled ({100.0 * n / max(1, total):.1f}%) in {labels.label_root}")


def cmd_convert_checkpoint(args):
    from occreid.fastreid.trainer import convert_checkpoint  # needs no TorchReID
    out = convert_checkpoint(args.src, args.dst, to=args.to)
    print(f"{args.src} -> {out} ({args.to} format)")


def cmd_export(args):
    from occreid.fastreid.export import export_from_config
    info = export_from_config(args.config_file, args.weights, args.out, opts=args.opts, check=not args.no_check,
                              atol=args.atol)
    diff = info["max_abs_diff"]
    print(f"{info['path']}: images (B, 3, H, W) 0-255 -> features (B, {info['dim']})"
          + ("" if diff is None else f"; onnxruntime vs torch max |difference| {diff:.2e}"))


def build_parser():
    p = argparse.ArgumentParser(prog="occreid", description=__doc__.split("\n\n")[0])
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error (default: one line)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn in (("index", cmd_index), ("search", cmd_search), ("masks", cmd_masks), ("saliency", cmd_saliency),
                     ("part-maps", cmd_part_maps)):
        s = sub.add_parser(name)
        s.set_defaults(fn=fn)
        s.add_argument("--config-file", required=True)
        s.add_argument("--weights", default="", help="trained checkpoint (MODEL.WEIGHTS)")
        s.add_argument("--folder", help="a folder of images")
        s.add_argument("--dataset", help="a registered dataset name (query/gallery split)")
        s.add_argument("--split", help="query or gallery")
        s.add_argument("--batch-size", type=int, default=64)
        s.add_argument("--num-workers", type=int, default=2)
        if name in ("index", "search"):
            s.add_argument("--skip-bad-images", action="store_true",
                           help="skip images that cannot be read (listed on stderr) instead of stopping")
        if name in ("index", "search"):
            s.add_argument("--backend", default="faiss", choices=["faiss", "milvus"],
                           help="faiss: a folder, searched in-process (default); milvus: a Milvus collection "
                                "(pip install occreid[milvus])")
            s.add_argument("--uri", help="milvus: a milvus-lite file (gallery.db) or a server, http://host:19530")
            s.add_argument("--collection", default="occreid_gallery", help="milvus: the collection name")
            s.add_argument("--token", default=os.environ.get("MILVUS_TOKEN", ""),
                           help="milvus: user:password or API key (default: $MILVUS_TOKEN)")
        if name == "index":
            s.add_argument("--out", help="faiss: folder to write the index into (manifest.json + index / metadata files)")
            s.add_argument("--append", action="store_true",
                           help="add to an existing index (same model and feature size, checked)")
            s.add_argument("--overwrite", action="store_true",
                           help="replace an existing index (faiss: atomically; milvus: the collection)")
        elif name == "saliency":
            s.add_argument("--num-queries", type=int, default=8, help="with --dataset: use N images")
            s.add_argument("--occlude-area", type=float, default=0.305,
                           help="also show each image occluded (area fraction; 0: no occluded copies)")
            s.add_argument("--fill", default="mean", choices=["mean", "black", "noise"])
            s.add_argument("--out", default="saliency.png", help="PNG to write")
        elif name == "part-maps":
            s.add_argument("--num-queries", type=int, default=8, help="with --dataset: use N query images")
            s.add_argument("--gallery-size", type=int, default=300,
                           help="with --dataset: gallery = the queries' identities + N other gallery images")
            s.add_argument("--topk", type=int, default=3)
            s.add_argument("--out", default="part_maps.png", help="PNG to write")
        elif name == "masks":
            s.add_argument("--num-queries", type=int, default=12, help="with --dataset: use N images")
            s.add_argument("--num-masks", type=int, default=3, help="single masks shown under the fused one")
            s.add_argument("--out", default="masks.png", help="PNG to write")
        else:
            s.add_argument("--index", help="faiss: folder written by occreid index")
            s.add_argument("--image", help="one query image")
            s.add_argument("--num-queries", type=int, default=0, help="with --dataset: use N queries")
            s.add_argument("--topk", type=int, default=10)
            s.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
            s.add_argument("--out", default="search_out", help="folder for rank_list.png / .html")
        s.add_argument("opts", nargs=argparse.REMAINDER, help="trailing KEY VALUE config overrides")
    s = sub.add_parser("parse", help="human-parsing labels (MediaPipe BlazePose) for AMD-Net")
    s.set_defaults(fn=cmd_parse)
    s.add_argument("image_dir", help="folder of images (searched recursively)")
    s.add_argument("--out", required=True, help="label root: PNGs + manifest.jsonl (resumes a previous run)")
    s.add_argument("--image-root", help="label paths mirror image paths relative to this folder (default IMAGE_DIR)")
    s.add_argument("--limit", type=int, help="only the first N images (sorted)")
    s.add_argument("--overlay", help="also write a PNG of images with their labels overlaid")
    s.add_argument("--num", type=int, default=16, help="images in the --overlay picture")
    s.add_argument("--segmenter", default="pose", choices=["pose", "selfie"], help="foreground segmentation")
    s = sub.add_parser("export", help="ONNX export of a model's inference graph (dynamic batch)")
    s.set_defaults(fn=cmd_export)
    s.add_argument("--config-file", required=True)
    s.add_argument("--weights", default="", help="trained checkpoint (MODEL.WEIGHTS); empty: the config's start")
    s.add_argument("--out", required=True, help=".onnx file to write")
    s.add_argument("--atol", type=float, default=1e-4, help="largest accepted onnxruntime - torch difference")
    s.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    s.add_argument("opts", nargs=argparse.REMAINDER, help="trailing KEY VALUE config overrides")
    s = sub.add_parser("convert-checkpoint", help="a FastReID <-> TorchReID checkpoint of an occreid model")
    s.set_defaults(fn=cmd_convert_checkpoint)
    s.add_argument("src", help="FastReID ({'model': ...}) or TorchReID ({'state_dict': ...}) checkpoint")
    s.add_argument("dst", help="file to write")
    s.add_argument("--to", required=True, choices=["fastreid", "torchreid"])
    return p


def format_error(e: BaseException) -> str:
    """One line for an error of the command line: the message (which names the file or key and what to do)."""
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    msg = " ".join(msg.split()) or type(e).__name__
    if "Non-existent config key" in msg or "Non-existent key" in msg:   # yacs, from a file / from KEY VALUE
        msg += " (a typo? the keys are listed in the config files under configs/ and projects/)"
    return msg


def main(argv=None):
    """Run one ``occreid`` command. Errors print one line, ``occreid: error: <message>``, and return 1;
    ``--debug`` (before the command) raises them with their traceback instead."""
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except KeyboardInterrupt:
        print("occreid: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the command line's one-line errors
        if args.debug:
            raise
        print(f"occreid: error: {format_error(e)} (--debug shows the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
