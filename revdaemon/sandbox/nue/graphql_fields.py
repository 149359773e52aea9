"""The fields each GraphQL type serves: every field Nue documents for it (sources below), so that a query
copied from Nue's documentation validates. A documented field the simulator does not keep answers null; a
few are derived from what it keeps (DERIVED).

Sources, read in the stored copies of Nue's documentation (nue-api.md, "GraphQL fields"):
- Customer: nue-api-docs.apidocumentation.com/version-2504/guide/customer/key-customer-fields (also 2502),
  api-docs.nue.io/customer-data-reference (`modifiedDate`).
- Subscription: api-docs.nue.io/subscription-data-reference (the part of the page that is stored).
- Invoice: the GraphQL example query of api-docs.nue.io/manage-invoices.
- Order, Quote: nue-api.md's Resources lists; no further GraphQL field list was found.
Scalar types of the added fields are [assumed] from their descriptions (a count is an Int, an amount a Float,
"whether ..." a Boolean, anything else a String).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from graphql import GraphQLBoolean, GraphQLFloat, GraphQLInt, GraphQLList, GraphQLScalarType, GraphQLString

S, F, N, B = GraphQLString, GraphQLFloat, GraphQLInt, GraphQLBoolean  # N: whole numbers
Kind = GraphQLScalarType | GraphQLList[Any]

FIELDS: dict[str, dict[str, Kind]] = {
    "Customer": {
        "id": S, "name": S, "recordType": S, "accountNumber": S, "externalId": S, "email": S, "phone": S,
        "website": S, "billingStreet": S, "billingCity": S, "billingState": S, "billingPostalCode": S,
        "billingCountry": S, "shippingStreet": S, "shippingCity": S, "shippingState": S,
        "shippingPostalCode": S, "shippingCountry": S, "paymentTerm": S, "billCycleDay": N,
        "salesAccountId": S, "todayARR": F, "todayCMRR": F, "totalTCV": F, "createdDate": S,
        "lastModifiedDate": S,
        # [doc] key customer fields
        "fax": S, "industry": S, "type": S, "ownership": S, "companySize": S, "numberOfEmployees": N,
        "annualRevenue": F, "paymentMethod": S, "paymentMethods": GraphQLList(S), "taxExempt": S,
        "billCycleStartMonth": S, "billingProrationEnabled": B, "parentCustomerId": S,
        "orderPrimaryContactId": S, "modifiedDate": S,
    },
    "Order": {
        "id": S, "orderNumber": S, "name": S, "description": S, "orderType": S, "status": S, "customerId": S,
        "effectiveDate": S, "totalAmount": F, "subtotal": F, "discount": F, "discountAmount": F,
        "taxAmount": F, "orderACV": F, "orderTCV": F, "orderStartDate": S, "orderPlacedDate": S,
        "activatedDate": S, "createdDate": S, "lastModifiedDate": S, "billToContactId": S,
        "quoteId": S, "opportunityId": S,  # [assumed] wire.ORDER_QUOTE_FIELD, wire.ORDER_OPPORTUNITY_FIELD
    },
    "Contact": {  # [assumed] contacts in the polling subset (nue_wire.CONTACT_FIELDS)
        "id": S, "customerId": S, "firstName": S, "lastName": S, "name": S, "email": S, "phone": S, "title": S,
        "createdDate": S, "lastModifiedDate": S,
    },
    "Subscription": {
        "id": S, "name": S, "subscriptionVersion": N, "customerId": S, "productId": S, "priceBookEntryId": S,
        "orderProductId": S, "subscriptionStartDate": S, "subscriptionEndDate": S, "subscriptionTerm": F,
        "renewalTerm": N, "autoRenew": B, "quantity": F, "status": S, "nextBillingDate": S, "freeTrial": B,
        "cancellationDate": S, "createdDate": S, "lastModifiedDate": S,
        # [doc] subscription data reference
        "subscriptionCompositeId": S, "subscriptionLevel": N, "billingAccountId": S, "priceBookId": S,
        "uomId": S, "actualSubscriptionTerm": F, "orderOnDate": S,
    },
    "Invoice": {
        "id": S, "name": S, "customerId": S, "orderId": S, "amount": F, "balance": F, "taxAmount": F,
        "invoiceDate": S, "dueDate": S, "status": S, "paymentStatus": S, "currencyIsoCode": S,
        "createdDate": S, "lastModifiedDate": S,
        # [doc] the manage-invoices example query
        "amountWithoutTax": F, "startDate": S, "endDate": S, "invoicePdf": S,
    },
    "Quote": {
        "id": S, "quoteNumber": S, "quoteVersion": N, "opportunityId": S, "name": S, "customerId": S,
        "status": S, "subscriptionStartDate": S, "subscriptionEndDate": S, "subscriptionTerm": F,
        "priceBookId": S, "discount": F, "discountAmount": F, "billingPeriod": S, "billingTiming": S,
        "currencyIsoCode": S, "subtotal": F, "totalAmount": F, "createdDate": S, "lastModifiedDate": S,
    },
}


def _without_tax(row: dict[str, Any]) -> Any:
    amount, tax = row.get("amount"), row.get("taxAmount")
    return amount - (tax or Decimal(0)) if isinstance(amount, Decimal) else None


# Documented fields computed from what the simulator keeps [assumed: the same meaning as their names].
DERIVED: dict[str, dict[str, Callable[[dict[str, Any]], Any]]] = {
    "Customer": {"modifiedDate": lambda row: row.get("lastModifiedDate")},
    "Invoice": {"amountWithoutTax": _without_tax},
}
