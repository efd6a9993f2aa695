#!/usr/bin/env python
"""Train and evaluate occreid models through TorchReID, the way TorchReID's ``scripts/main.py`` does.

Same yaml config style and flags as TorchReID's script (``--config-file``, ``-s/--sources``, ``-t/--targets``,
``--root``, trailing ``KEY VALUE`` opts; keys ``model.*``, ``data.*``, ``sampler.*``, ``train.*``, ``loss.*``,
``test.*``), with occreid's models (``model.name: ocnet_osnet_x0_25``, ...: :data:`occreid.torchreid.MODELS`) and
datasets (``occluded_duke``, ``partial_reid``, ...) registered by ``import occreid.torchreid``. Additions:

- ``loss.name: occreid`` trains with the method's own losses (:class:`occreid.torchreid.OccReIDEngine`);
  ``softmax`` / ``triplet`` use TorchReID's engines (BoT models only), all three with occreid's evaluation (the
  model's own test distance, occreid's re-ranking with ``test.rerank``);
- ``model.load_weights`` takes a FastReID or TorchReID checkpoint of the same model (checked); ``model.resume`` a
  TorchReID checkpoint of this script (model, optimizer, scheduler, epoch);
- ``data.test_interpolation``: ``bilinear`` (TorchReID's resize) or ``bicubic`` (FastReID's; the default here, so
  one checkpoint gives FastReID's numbers);
- the final model is also written as ``<save_dir>/model_final_fastreid.pth`` for FastReID's ``MODEL.WEIGHTS``, and
  the metrics per target dataset to ``<save_dir>/occreid_results.json``.

Examples::

    FASTREID_DATASETS=~/.cache/occreid/data python scripts/torchreid_main.py \\
        --config-file configs/torchreid/ocnet_osnet_x0_25_occluded_duke.yaml --root ~/.cache/occreid/data
    python scripts/torchreid_main.py --config-file configs/torchreid/ocnet_osnet_x0_25_occluded_duke.yaml \\
        --root ~/.cache/occreid/data test.evaluate True model.load_weights logs/.../model_final.pth
"""

import argparse
import json
import os
import sys
import time

import torch
from yacs.config import CfgNode as CN



def get_default_config():
    """TorchReID's ``scripts/default_config.py`` keys for image re-ID, plus occreid's (module docstring)."""
    cfg = CN()
    cfg.model = CN({"name": "bot_osnet_x0_25", "pretrained": True, "load_weights": "", "resume": ""})
    cfg.data = CN({"type": "image", "root": "reid-data", "sources": ["occluded_duke"], "targets": ["occluded_duke"],
                   "workers": 2, "split_id": 0, "height": 256, "width": 128, "combineall": False,
                   "transforms": ["random_flip"], "k_tfm": 1, "norm_mean": [0.485, 0.456, 0.406],
                   "norm_std": [0.229, 0.224, 0.225], "save_dir": "log", "load_train_targets": False,
                   "test_interpolation": "bicubic"})
    cfg.sampler = CN({"train_sampler": "RandomIdentitySampler", "train_sampler_t": "RandomSampler",
                      "num_instances": 4, "num_cams": 1, "num_datasets": 1})
    cfg.train = CN({"optim": "adam", "lr": 0.00035, "weight_decay": 5e-4, "max_epoch": 1, "start_epoch": 0,
                    "batch_size": 64, "fixbase_epoch": 0, "open_layers": ["classifier"], "staged_lr": False,
                    "new_layers": ["classifier"], "base_lr_mult": 0.1, "lr_scheduler": "single_step",
                    "stepsize": [20], "gamma": 0.1, "print_freq": 20, "seed": 1})
    cfg.sgd = CN({"momentum": 0.9, "dampening": 0.0, "nesterov": False})
    cfg.rmsprop = CN({"alpha": 0.99})
    cfg.adam = CN({"beta1": 0.9, "beta2": 0.999})
    cfg.loss = CN({"name": "occreid"})
    cfg.loss.softmax = CN({"label_smooth": True})
    cfg.loss.triplet = CN({"margin": 0.3, "weight_t": 1.0, "weight_x": 1.0})
    cfg.test = CN({"batch_size": 128, "dist_metric": "euclidean", "normalize_feature": False,
                   "ranks": [1, 5, 10, 20], "evaluate": False, "eval_freq": -1, "start_eval": 0, "rerank": False,
                   "visrank": False, "visrank_topk": 10})
    cfg.use_gpu = False
    return cfg


def build_datamanager(cfg, tr):
    from torchvision import transforms as T
    dm = tr.data.ImageDataManager(
        root=cfg.data.root, sources=cfg.data.sources, targets=cfg.data.targets, height=cfg.data.height,
        width=cfg.data.width, transforms=cfg.data.transforms, k_tfm=cfg.data.k_tfm, norm_mean=cfg.data.norm_mean,
        norm_std=cfg.data.norm_std, use_gpu=cfg.use_gpu, split_id=cfg.data.split_id, combineall=cfg.data.combineall,
        load_train_targets=cfg.data.load_train_targets, batch_size_train=cfg.train.batch_size,
        batch_size_test=cfg.test.batch_size, workers=cfg.data.workers, num_instances=cfg.sampler.num_instances,
        num_cams=cfg.sampler.num_cams, num_datasets=cfg.sampler.num_datasets, train_sampler=cfg.sampler.train_sampler,
        train_sampler_t=cfg.sampler.train_sampler_t)
    modes = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}
    if cfg.data.test_interpolation not in modes:
        raise KeyError(f"data.test_interpolation must be one of {sorted(modes)}, got {cfg.data.test_interpolation!r}")
    resize = dm.transform_te.transforms[0]
    if not isinstance(resize, T.Resize):
        raise TypeError(f"TorchReID's test transform does not start with a Resize: {dm.transform_te}")
    resize.interpolation = modes[cfg.data.test_interpolation]  # shared by every test loader
    print(f"Test resize: {cfg.data.test_interpolation}")
    return dm


def build_engine(cfg, dm, model, optimizer, scheduler):
    import occreid.torchreid as ot
    if cfg.loss.name == "occreid":
        return ot.OccReIDEngine(dm, model, optimizer, scheduler=scheduler, use_gpu=cfg.use_gpu)
    if cfg.loss.name == "softmax":
        return ot.OccReIDSoftmaxEngine(dm, model, optimizer=optimizer, scheduler=scheduler, use_gpu=cfg.use_gpu,
                                       label_smooth=cfg.loss.softmax.label_smooth)
    if cfg.loss.name == "triplet":
        return ot.OccReIDTripletEngine(dm, model, optimizer=optimizer, margin=cfg.loss.triplet.margin,
                                       weight_t=cfg.loss.triplet.weight_t, weight_x=cfg.loss.triplet.weight_x,
                                       scheduler=scheduler, use_gpu=cfg.use_gpu,
                                       label_smooth=cfg.loss.softmax.label_smooth)
    raise KeyError(f"loss.name must be occreid, softmax or triplet, got {cfg.loss.name!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__)
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("-s", "--sources", type=str, nargs="+", help="source datasets (delimited by space)")
    parser.add_argument("-t", "--targets", type=str, nargs="+", help="target datasets (delimited by space)")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation")
    parser.add_argument("--root", type=str, default="", help="path to data root")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="modify config options (KEY VALUE)")
    args = parser.parse_args(argv)

    import occreid.torchreid as ot
    tr = ot.torchreid_modules()
    cfg = get_default_config()
    cfg.use_gpu = torch.cuda.is_available()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    for key in ("root", "sources", "targets", "transforms"):
        if getattr(args, key):
            cfg.data[key] = getattr(args, key)
    cfg.merge_from_list(args.opts)
    cfg.data.root = os.path.expanduser(os.path.expandvars(cfg.data.root))
    cfg.freeze()
    tr.utils.set_random_seed(cfg.train.seed)
    os.makedirs(cfg.data.save_dir, exist_ok=True)
    sys.stdout = tr.utils.Logger(os.path.join(
        cfg.data.save_dir, ("test.log" if cfg.test.evaluate else "train.log") + time.strftime("-%Y-%m-%d-%H-%M-%S")))
    print(f"Show configuration\n{cfg}\n")

    dm = build_datamanager(cfg, tr)
    print(f"Building model: {cfg.model.name}")
    model = tr.models.build_model(name=cfg.model.name, num_classes=max(dm.num_train_pids, 1), loss=cfg.loss.name,
                                  pretrained=cfg.model.pretrained, use_gpu=cfg.use_gpu)
    if isinstance(model, ot.FastReIDModel):
        from occreid.torchreid.models import TORCHREID_MEAN, TORCHREID_STD
        if tuple(cfg.data.norm_mean) != TORCHREID_MEAN or tuple(cfg.data.norm_std) != TORCHREID_STD:
            raise ValueError(f"data.norm_mean / norm_std must stay TorchReID's ImageNet defaults ({TORCHREID_MEAN}, "
                             f"{TORCHREID_STD}) for occreid models: they undo them into FastReID's 0-255 input")
    elif cfg.loss.name == "occreid":
        raise ValueError(f"loss.name occreid trains occreid models (occreid.torchreid.MODELS); {cfg.model.name} is a "
                         f"TorchReID model: use loss.name softmax or triplet")
    if cfg.model.load_weights:
        if isinstance(model, ot.FastReIDModel):
            ot.load_weights(model, cfg.model.load_weights)
        else:
            tr.utils.load_pretrained_weights(model, cfg.model.load_weights)
        print(f"Loaded weights from {cfg.model.load_weights}")
    if cfg.use_gpu:
        model = model.cuda()
    optimizer = tr.optim.build_optimizer(model, optim=cfg.train.optim, lr=cfg.train.lr,
                                         weight_decay=cfg.train.weight_decay, momentum=cfg.sgd.momentum,
                                         sgd_dampening=cfg.sgd.dampening, sgd_nesterov=cfg.sgd.nesterov,
                                         rmsprop_alpha=cfg.rmsprop.alpha, adam_beta1=cfg.adam.beta1,
                                         adam_beta2=cfg.adam.beta2, staged_lr=cfg.train.staged_lr,
                                         new_layers=cfg.train.new_layers, base_lr_mult=cfg.train.base_lr_mult)
    scheduler = tr.optim.build_lr_scheduler(optimizer, lr_scheduler=cfg.train.lr_scheduler,
                                            stepsize=cfg.train.stepsize, gamma=cfg.train.gamma,
                                            max_epoch=cfg.train.max_epoch)
    start_epoch = cfg.train.start_epoch
    if cfg.model.resume:
        start_epoch = tr.utils.resume_from_checkpoint(cfg.model.resume, model, optimizer=optimizer, scheduler=scheduler)
    engine = build_engine(cfg, dm, model, optimizer, scheduler)
    engine.run(save_dir=cfg.data.save_dir, max_epoch=cfg.train.max_epoch, start_epoch=start_epoch,
               print_freq=cfg.train.print_freq, fixbase_epoch=cfg.train.fixbase_epoch,
               open_layers=cfg.train.open_layers, start_eval=cfg.test.start_eval, eval_freq=cfg.test.eval_freq,
               test_only=cfg.test.evaluate, dist_metric=cfg.test.dist_metric,
               normalize_feature=cfg.test.normalize_feature, visrank=cfg.test.visrank,
               visrank_topk=cfg.test.visrank_topk, use_metric_cuhk03=False, ranks=cfg.test.ranks,
               rerank=cfg.test.rerank)
    if isinstance(model, ot.FastReIDModel) and not cfg.test.evaluate:
        path = ot.save_fastreid_checkpoint(model, os.path.join(cfg.data.save_dir, "model_final_fastreid.pth"))
        print(f"FastReID checkpoint: {path}")
    results = dict(engine.results)
    if results:
        with open(os.path.join(cfg.data.save_dir, "occreid_results.json"), "w") as f:
            json.dump({"model": cfg.model.name, "weights": cfg.model.load_weights, "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
