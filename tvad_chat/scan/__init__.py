"""`tvad scan`: analyse every clip of an archive (many cameras, hours of footage) with the scene analysis.

discover   finds the clips under a root (video files and frame folders, any depth), their camera and wall-clock start
work       the tasks: one clip whole, or a long clip's profile and overlapping segments, and event thumbnails
index      per-clip completion records, the archive's event index (CSV, JSONL) and the static HTML summary
run        the scan itself: plan, submit (tvad_chat.executor: local processes or Ray), join segments, write
           atomically, resume
"""
