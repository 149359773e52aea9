"""Loads the shared seed (revdaemon.sandbox.seed) into the store as the org's starting records."""

from __future__ import annotations

from revdaemon.sandbox.salesforce.store import Store
from revdaemon.sandbox.seed import SeedData

FAMILIES = {"Product": "Software", "Service": "Services", "Bundle": "Software"}


def load_seed(store: Store, seed: SeedData) -> None:
    stamp = seed.created_at.timestamp()
    clock = store.clock
    store.clock = lambda: stamp  # derived writes (Amount roll-ups) carry the seed's timestamps too
    try:
        admin = seed.users[0].id

        def put(obj: str, record_id: str, data: dict[str, object], owner: str = admin) -> None:
            store.create(obj, data, owner, record_id=record_id, system=True, stamp=stamp)

        for user in seed.users:
            first, _, last = user.name.partition(" ")
            put("User", user.id, {"Username": user.username, "FirstName": first, "LastName": last or first,
                                  "Email": user.email, "Alias": user.username[:8], "IsActive": True})
        put("Pricebook2", seed.pricebook_id, {"Name": "Standard Price Book", "IsActive": True, "IsStandard": True})
        for product in seed.products:
            put("Product2", product.id, {"Name": product.name, "ProductCode": product.sku, "IsActive": True,
                                         "Family": FAMILIES.get(product.record_type, "Software"),
                                         "QuantityUnitOfMeasure": product.uom})
            put("PricebookEntry", product.pricebook_entry_id, {
                "Pricebook2Id": seed.pricebook_id, "Product2Id": product.id,
                "UnitPrice": float(product.unit_price), "IsActive": True})
        for account in seed.accounts:
            put("Account", account.id, {"Name": account.name, "Industry": account.industry,
                                        "BillingCity": account.billing_city,
                                        "BillingCountry": account.billing_country, "Website": account.website,
                                        "Phone": account.phone}, account.owner_id)
        for contact in seed.contacts:
            put("Contact", contact.id, {"AccountId": contact.account_id, "FirstName": contact.first_name,
                                        "LastName": contact.last_name, "Email": contact.email})
        # Brownfield: an earlier tool wrote the order id on the opportunity (the order itself is Nue's seed).
        shown = {d.opportunity_id: d.order_id for d in seed.brownfield if d.order_id}
        for opportunity in seed.opportunities:
            fields: dict[str, object] = {
                "Name": opportunity.name, "AccountId": opportunity.account_id, "StageName": opportunity.stage,
                "CloseDate": opportunity.close_date.isoformat(), "Type": opportunity.type,
                "Pricebook2Id": seed.pricebook_id}
            if opportunity.id in shown:
                fields["Nue_Order_Id__c"] = shown[opportunity.id]
            put("Opportunity", opportunity.id, fields, opportunity.owner_id)
            for line in opportunity.lines:
                data: dict[str, object] = {"OpportunityId": opportunity.id,
                                           "PricebookEntryId": line.pricebook_entry_id,
                                           "Quantity": float(line.quantity), "UnitPrice": float(line.unit_price)}
                if line.discount:
                    data["Discount"] = float(line.discount)
                put("OpportunityLineItem", line.id, data, opportunity.owner_id)
    finally:
        store.clock = clock
