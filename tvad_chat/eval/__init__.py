"""Evaluation metrics, one family per module (anomalib style), each checked against a reference:

- text.py     BLEU-4 (T-VAD best-reference per video; captioning corpus BLEU) and Yes/No accuracy
- frames.py   frame-level micro / macro ROC-AUC
- objects.py  RBDC / TBDC (Ramachandra & Jones, WACV 2020)
- pixels.py   pixel AUROC, AP, AUPRO, max-F1 and the TAO paper's per-frame protocol
- curves.py   ROC / PR / F1 / PRO areas from cumulative counts (exact or histogram-binned)
- io.py       readers of the JSONL / JSON / text / image inputs, with errors naming file and line
- report.py   JSON reports (percent, 0-100) and readable tables
- runner.py   a model over a corpus split: every metric above, per ablation variant (`tvad eval run`)
"""
