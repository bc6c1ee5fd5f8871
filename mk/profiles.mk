# `make profiles`: the shipped scene profiles, fitted on the normal training footage in ../shared/data.
# profiles/ucsd_ped2 (16 frame folders, recorded at 10 fps) and profiles/cuhk_avenue (2 videos, 25 fps).
# Included from the top-level Makefile (PY and STAMP come from there).

SHARED_DATA ?= ../shared/data

.PHONY: profiles
profiles: $(STAMP)
	$(VENV)/bin/tvad calibrate $(SHARED_DATA)/ucsd_ped2/training/frames/* --folder-fps 10 \
		--name ucsd_ped2 --out profiles/ucsd_ped2
	$(VENV)/bin/tvad calibrate $(SHARED_DATA)/cuhk_avenue/training_videos/*.avi \
		--name cuhk_avenue --out profiles/cuhk_avenue
