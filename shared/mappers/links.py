"""Links to the storefront."""

from __future__ import annotations


def product_url(template: str, slug: str | None) -> str:
    """`PRODUCT_URL_TEMPLATE` with every `{{productSlug}}` replaced; "" when there is no template or slug.

    The reference sent the literal string 'None' without a template, and replaced only the first placeholder.
    """
    if not template or not slug:
        return ""
    return template.replace("{{productSlug}}", slug)
