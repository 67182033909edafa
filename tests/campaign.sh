#!/bin/sh
# The bounded fault campaign of the test command (about a minute); `ninja soak` runs 10 minutes.
exec ./build/campaign --seconds "${RF_CAMPAIGN_SECONDS:-60}"
