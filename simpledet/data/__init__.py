"""Datasets (COCO json, synthetic shapes), transforms, target assignment and the loader.

Kept import-free so ``import simpledet.data.coco`` does not pull in the loader's dependencies.
"""
