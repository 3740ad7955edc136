"""customers → Klaviyo profiles, upserted through profile bulk import jobs (one job per page).

The bulk import matches existing profiles by email and external id, so a re-run updates profiles and never
fails on existing ones; a profile created earlier by a guest order (same email) gains the customer's id.
Customers with an erasure record (`shared.erasures`: erased while the import ran) are skipped and counted.
"""

from __future__ import annotations

from job.importers.common import count, mapped, next_page
from job.runner import JobContext
from job.state import ImportRecord
from shared.bulk import JobResult
from shared.consent import sync_page
from shared.mappers.customer import profile_attributes


def step(job: JobContext, record: ImportRecord) -> bool:
    page, last = next_page(job, record, "customers")
    rules = job.context.settings.customer.custom_fields
    with_email = [customer for customer in page if customer.get("email")]
    if with_email:
        context = job.context
        erased, _ = context.erasures.erased(context.commercetools, (c["id"] for c in with_email))
        if erased:
            with_email = [customer for customer in with_email if customer["id"] not in erased]
            record.counts["erased"] = record.counts.get("erased", 0) + len(erased)
    record.counts["skipped"] += len(page) - len(with_email)
    mapped_customers = mapped(record, "customer", with_email, lambda customer: profile_attributes(customer, rules))
    profiles = [attributes for _customer, attributes in mapped_customers]
    if profiles:
        count(record, job.sender.wait([job.sender.profile_job(profiles)]))
        # Consent after the profiles exist; a customer whose consent failed is counted failed (sent next run).
        _sent, failures = sync_page([customer for customer, _ in mapped_customers], job.context, job.sender)
        count(record, JobResult(failed=len(failures), errors=failures))
    return last
