#!/bin/sh
# The fault campaign (tests/campaign.c) with delta pushes of sparse versions, bounded for the test
# command: 30 s of random faults while trainers push patches, every complete version exact. The
# full-length campaigns run behind `ninja soak` (dense) and `ninja soak_delta`.
exec ./build/campaign --delta --seconds 30
