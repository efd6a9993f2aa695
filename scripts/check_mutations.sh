#!/usr/bin/env bash
# Break each ablation switch / equation on purpose, once, and check that a test fails ("caught").
# Each mutation edits one file, runs the tests named, and restores the file. Run from anywhere:
#   bash scripts/check_mutations.sh [PREFIX]   (all, about 10 minutes on 2 CPU cores; or those named PREFIX*)
# A line "NOT CAUGHT" means a switch can be ignored without any test noticing.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
backup=$(mktemp)
trap 'rm -f "$backup"' EXIT
ONLY="${1:-}"
run() {
  local name="$1" file="$2" old="$3" new="$4"; shift 4
  case "$name" in "${ONLY}"*) ;; *) return ;; esac
  cp "$file" "$backup"
  python3 -c "
import sys; p,o,n=sys.argv[1:4]; s=open(p).read(); assert o in s, ('not found', o); open(p,'w').write(s.replace(o,n,1))" "$file" "$old" "$new" || { echo "MUTATION $name: pattern not found"; return; }
  timeout 600 .venv/bin/python -m pytest -q -x "$@" > "${TMPDIR:-/tmp}/mut_$name.log" 2>&1
  case $? in
    0) echo "MUTATION $name: NOT CAUGHT" ;;
    1) echo "MUTATION $name: caught ($(grep -m1 FAILED "${TMPDIR:-/tmp}/mut_$name.log" | cut -c1-120))" ;;
    *) echo "MUTATION $name: ERROR (pytest could not run the tests; see ${TMPDIR:-/tmp}/mut_$name.log)" ;;
  esac
  cp "$backup" "$file"
}
run dnl_no_whitening plugins/occreid/layers/dnl_block.py "q = (q - q.mean(2, keepdim=True)).transpose(1, 2)" "q = q.transpose(1, 2)" tests/test_sgr_modules.py
run row4_dnl_off projects/SGR/configs/ablation/row4_cbe_bed_dnl.yml "  SGR:
" "  SGR:
    DNL:
      ENABLED: False
" tests/test_ablation_switches.py -k row4
run z_from_bnneck plugins/occreid/fastreid/sgr.py 'z = bn if self.neck_feat == "after" else gf[..., 0, 0]' 'z = bn' tests/test_sgr.py -k eq5
run re_fill_black plugins/occreid/fastreid/sgr.py "ratio=tuple(cbe_re_ratio),
                                            value=list(cbe_value))" "ratio=tuple(cbe_re_ratio),
                                            value=0)" tests/test_sgr.py -k pixel_mean
run cfm_switch_ignored plugins/occreid/fastreid/ocnet.py "use_cfm=o.CFM.ENABLED" "use_cfm=True" tests/test_ablation_switches.py -k ocnet
run ram_switch_ignored plugins/occreid/fastreid/ocnet.py "fusion=o.FUSION.lower()" "fusion='ram'" tests/test_ablation_switches.py -k ocnet
run sl_switch_ignored plugins/occreid/fastreid/ocnet.py '"sl_enabled": o.SL.ENABLED' '"sl_enabled": True' tests/test_ablation_switches.py -k ocnet
run sl_feat_ignored plugins/occreid/fastreid/ocnet.py 'if self.sl_feat == "pre_relu":' 'if False:' tests/test_ocnet.py -k signed
run cfm_score_ignored plugins/occreid/layers/center_focus_module.py 'if self.score == "channel" else' 'if False else' tests/test_ocnet.py -k cfm
run cbe_second_ignored plugins/occreid/fastreid/sgr.py 'if cbe_stripes and cbe_second == "bce" else None' 'if cbe_stripes else None' tests/test_sgr.py -k second_half
run bed_reduction_ignored plugins/occreid/fastreid/sgr.py 'bed_loss(z, gt_labels, self.bed_alpha, self.bed_reduction)' 'bed_loss(z, gt_labels, self.bed_alpha)' tests/test_sgr.py -k eq5
run me_ignored plugins/occreid/fastreid/sgr.py 'return self.momentum_mean(z) if self.me else z' 'return z' tests/test_ablation_switches.py -k row6
run test_feat_ignored plugins/occreid/fastreid/sgr.py 'if self.test_feat == "bnneck":' 'if False:' tests/test_sgr.py -k test_feat_bnneck
run pan_shared_fc_ignored plugins/occreid/fastreid/pan.py '"shared_fc": p.SHARED_FC' '"shared_fc": True' tests/test_pan.py -k table2
run pan_mask_source_ignored plugins/occreid/fastreid/pan.py '"mask_source": p.MASK_SOURCE.lower()' '"mask_source": "conv50"' tests/test_pan.py -k table3
run pan_local_source_ignored plugins/occreid/fastreid/pan.py '"local_source": p.LOCAL_SOURCE.lower()' '"local_source": "conv51"' tests/test_pan.py -k table3
run pan_softmax_ignored plugins/occreid/fastreid/pan.py '"mask_softmax": p.MASK_SOFTMAX.lower()' '"mask_softmax": "none"' tests/test_pan.py -k table4
run pan_local_dim_ignored plugins/occreid/fastreid/pan.py '"local_dim": p.LOCAL_DIM' '"local_dim": 256' tests/test_pan.py -k fig2
run pan_pooling_no_abs plugins/occreid/layers/pan.py 'den = masks.abs().sum(dim=(2, 3))' 'den = masks.sum(dim=(2, 3))' tests/test_pan.py -k weighted_pooling
run pan_buffer_shared plugins/occreid/layers/pan.py 'self.conv51 = copy.deepcopy(block50) if' 'self.conv51 = block50 if' tests/test_pan.py -k "buffer or table3"
run pan_local_id_weight plugins/occreid/fastreid/pan.py '"loss_cls_local": self.id_weight * l_id' '"loss_cls_local": l_id' tests/test_pan.py -k eq5
run aligned_obc_ignored plugins/occreid/fastreid/aligned.py '"obc": a.OBC.ENABLED' '"obc": True' tests/test_aligned.py -k "switches and no_obc"
run aligned_alpha_ignored plugins/occreid/fastreid/aligned.py '"alpha": a.OBC.ALPHA' '"alpha": 0.8' tests/test_aligned.py -k "switches and alpha_0.5"
run aligned_fill_ignored plugins/occreid/fastreid/aligned.py '"obc_fill": a.OBC.FILL' '"obc_fill": "mean"' tests/test_aligned.py -k "switches and black"
run aligned_test_distance_ignored plugins/occreid/fastreid/aligned.py 'c, mode = cfg.MODEL.BACKBONE.FEAT_DIM, cfg.MODEL.ALIGNED.TEST_DISTANCE' 'c, mode = cfg.MODEL.BACKBONE.FEAT_DIM, "global"' tests/test_aligned.py -k test_distances
run aligned_local_hard_pairs plugins/occreid/fastreid/aligned.py 'd_an = aligned_local_distance(local, local[neg], paired=True)' 'd_an = aligned_local_distance(local, local[pos], paired=True)' tests/test_aligned.py -k losses_against
run aligned_path_no_min plugins/occreid/layers/aligned.py 'acc = torch.minimum(prev[j], row[j - 1]) + cell' 'acc = prev[j] + cell' tests/test_aligned.py -k brute_force
run aligned_obc_neck_ignored plugins/occreid/fastreid/aligned.py '"obc_neck": a.OBC.NECK' '"obc_neck": "none"' tests/test_aligned.py -k "switches and bn_neck"
run amd_part_attention_ignored plugins/occreid/fastreid/amdnet.py '"part_attention": a.PART_ATTENTION' '"part_attention": True' tests/test_amdnet.py -k "table2 and wo_part"
run amd_sim_ignored plugins/occreid/fastreid/amdnet.py '"sim": a.SIM.ENABLED' '"sim": True' tests/test_amdnet.py -k "table2 and wo_sim"
run amd_tff_ignored plugins/occreid/fastreid/amdnet.py '"tff": a.TFF.ENABLED' '"tff": True' tests/test_amdnet.py -k "table2 and wo_tff"
run amd_part_loss_ignored plugins/occreid/fastreid/amdnet.py '"part_loss": a.PART_LOSS' '"part_loss": "part_soft"' tests/test_amdnet.py -k "table2 and part_"
run amd_parsing_weight_ignored plugins/occreid/fastreid/amdnet.py '"parsing_weight": a.PARSING_WEIGHT' '"parsing_weight": 1.0' tests/test_amdnet.py -k parsing_weight
run amd_no_head_weight plugins/occreid/layers/amdnet.py '    w[0] += beta_head' '    w[0] += 0.0' tests/test_amdnet.py -k "eq12 or references"
run amd_pool_by_mass plugins/occreid/layers/amdnet.py 'f_parts = torch.einsum("bchw,bkhw->bkc", fmap, parts) / (h * w)' 'f_parts = torch.einsum("bchw,bkhw->bkc", fmap, parts) / parts.sum((2, 3))[..., None].clamp(min=1e-6)' tests/test_amdnet.py -k "pooling or references"
run amd_tff_no_3delta plugins/occreid/layers/amdnet.py 'return tau1 + self.gated(tau) + 3.0 * delta' 'return tau1 + self.gated(tau) + delta' tests/test_amdnet.py -k eq11
run amd_sim_no_amplitude plugins/occreid/layers/amdnet.py 'spec = torch.polar(amp, self.phase_conv(pha))' 'spec = torch.polar(torch.ones_like(amp), self.phase_conv(pha))' tests/test_amdnet.py -k sim
run amd_label_no_flip plugins/occreid/fastreid/parsing_data.py '            lab = lab[:, ::-1]' '            pass' tests/test_amdnet.py -k joint
run amd_gamma_ignored plugins/occreid/fastreid/amdnet.py '"gamma": a.GAMMA' '"gamma": 0.4' tests/test_amdnet.py -k scalar_keys
run amd_beta_ignored plugins/occreid/fastreid/amdnet.py '"beta_head": a.BETA_HEAD' '"beta_head": 0.5' tests/test_amdnet.py -k scalar_keys
run amd_sim_alpha_ignored plugins/occreid/fastreid/amdnet.py '"sim_alpha": a.SIM.ALPHA' '"sim_alpha": 0.35' tests/test_amdnet.py -k scalar_keys
run amd_maps_detached plugins/occreid/fastreid/amdnet.py '        out = attention_pooling(fmap, parts)' '        out = attention_pooling(fmap, parts.detach())' tests/test_amdnet.py -k reach_the_attention
run amd_label_crop_offset plugins/occreid/fastreid/parsing_data.py 'lab = labp[top:top + h, left:left + w]' 'lab = labp[2 * p - top:2 * p - top + h, left:left + w]' tests/test_amdnet.py -k joint
run ocnet_sl_no_gamma plugins/occreid/fastreid/ocnet.py 'loss["loss_sl"] = self.gamma * separation_loss(' 'loss["loss_sl"] = separation_loss(' tests/test_ocnet.py -k sl_gamma
run ocnet_eval_fc_without_cfm plugins/occreid/layers/ocnet_head.py 'out["f_c"] = self._pool(self.cm_center(self.cfm(fmap)))' 'out["f_c"] = self._pool(self.cm_center(self.cfm(fmap) if self.training else __import__("occreid.layers.center_focus_module", fromlist=["center_crop"]).center_crop(fmap, self.cfm.size)))' tests/test_ocnet.py -k centre_feature
run amd_parsing_targets_flipped plugins/occreid/fastreid/amdnet.py 't = parsing_targets(parsing, out["P_logits"].shape[-2:])' 't = parsing_targets(parsing.flip(1), out["P_logits"].shape[-2:])' tests/test_amdnet.py -k follow_the_labels
run pan_global_avg_pool plugins/occreid/layers/pan.py 'glob = self.global_fc(torch.amax(maps["conv50"], dim=(2, 3)))' 'glob = self.global_fc(maps["conv50"].mean(dim=(2, 3)))' tests/test_pan.py -k global_max
run aligned_local_norm_ignored plugins/occreid/fastreid/aligned.py '"local_norm": a.LOCAL_NORM' '"local_norm": True' tests/test_aligned.py -k local_norm
run channels_last_ignored plugins/occreid/fastreid/trainer.py '        if channels_last_enabled(cfg):
            use_channels_last(model)' '        if False:
            use_channels_last(model)' tests/test_throughput.py -k channels_last
run frozen_backbone_ignored plugins/occreid/fastreid/trainer.py '    inner.backbone = frozen' '    pass' tests/test_throughput.py -k frozen
run frozen_engine_ignored plugins/occreid/fastreid/trainer.py '    if engine == "onnxruntime" and device.type == "cpu":' '    if False:' tests/test_throughput.py -k frozen_backbone_gives
run milvus_row_check_removed plugins/occreid/evaluation/milvus_index.py 'if meta.get("rows") is not None and len(index) != meta["rows"]:' 'if False:' tests/test_faults.py -k damaged_milvus
run cache_reads_wrong_image plugins/occreid/fastreid/image_dataset.py "self.transform(self.cache[index])" "self.transform(self.cache[0])" tests/test_throughput.py -k decoded_image_cache
run test_interpolation_ignored plugins/occreid/fastreid/trainer.py 't.interpolation = InterpolationMode.BILINEAR if mode == "bilinear" else InterpolationMode.BICUBIC' 'pass' tests/test_throughput.py -k interpolation
