"""Prompt texts as data files, with a small loader."""
