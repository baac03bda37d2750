"""Training loop, tester and COCO evaluation. Import the submodules you need."""
