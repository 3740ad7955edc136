"""The job application: scheduled and triggered bulk imports."""
