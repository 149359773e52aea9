"""The custom fields and the custom object revdaemon's flows write in Salesforce, defined once. Pure.

`revdaemon setup salesforce` compares these with the org's describe and creates what is missing; the Salesforce
simulator's default org is made of them. Types are describe's names (string, textarea, picklist, double,
currency, percent, int, boolean, date, datetime, reference); metadata.py says how each becomes a Metadata API
field. A picklist lists the values revdaemon writes by itself; `values_from` names the mapping.lookups table
whose values it also takes (config.yaml decides those).
"""

from __future__ import annotations

from dataclasses import dataclass

LONG_TEXT = 32_768
SYNC_STATUS_VALUES = ("Pending", "Synced", "Error")
SUBSCRIPTION_STATUS_VALUES = ("Active", "Trial", "Past Due", "Canceled", "Churned")
BILLING_STATUS_VALUES = ("Posted", "Paid", "Overdue", "Void")


@dataclass(frozen=True, kw_only=True)
class FieldDef:
    """A custom field on a standard or custom object; `name` ends in `__c`."""

    object: str
    name: str
    type: str = "string"
    label: str
    length: int = 255
    external_id: bool = False
    unique: bool = False
    picklist: tuple[str, ...] = ()
    values_from: str | None = None  # a mapping.lookups table whose values the field also takes
    reference_to: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.object}.{self.name}"


@dataclass(frozen=True, kw_only=True)
class ObjectDef:
    """A custom object (`name` ends in `__c`); Salesforce gives it Id, Name, OwnerId and the audit fields."""

    name: str
    label: str
    label_plural: str
    fields: tuple[FieldDef, ...] = ()


def _f(obj: str, name: str, type_: str = "string", *, label: str, length: int = 255, external_id: bool = False,
       unique: bool = False, picklist: tuple[str, ...] = (), values_from: str | None = None,
       reference_to: str | None = None) -> FieldDef:
    return FieldDef(object=obj, name=name, type=type_, label=label, length=length, external_id=external_id,
                    unique=unique, picklist=picklist, values_from=values_from, reference_to=reference_to)


CUSTOM_FIELDS: tuple[FieldDef, ...] = (
    # Flow 1: the order made for a won deal, found again by its id (also how flow 1 knows a deal is ordered).
    _f("Opportunity", "Nue_Order_Id__c", external_id=True, label="Nue Order Id"),
    _f("Opportunity", "Nue_Order_Number__c", label="Nue Order Number"),
    # Sync status shown on the records (mapping.sync_status), where configured.
    _f("Opportunity", "Nue_Sync_Status__c", "picklist", picklist=SYNC_STATUS_VALUES, label="Nue Sync Status"),
    _f("Opportunity", "Nue_Sync_Error__c", "textarea", length=LONG_TEXT, label="Nue Sync Error"),
    _f("Opportunity", "Nue_Last_Synced_At__c", "datetime", label="Nue Last Synced At"),
    _f("Account", "Nue_Sync_Status__c", "picklist", picklist=SYNC_STATUS_VALUES, label="Nue Sync Status"),
    _f("Account", "Nue_Sync_Error__c", "textarea", length=LONG_TEXT, label="Nue Sync Error"),
    _f("Account", "Nue_Last_Synced_At__c", "datetime", label="Nue Last Synced At"),
    # Flow 2: subscription status and MRR on the account.
    _f("Account", "Nue_Customer_Id__c", external_id=True, unique=True, label="Nue Customer Id"),
    _f("Account", "MRR__c", "currency", label="MRR"),
    _f("Account", "ARR__c", "currency", label="ARR"),
    _f("Account", "Subscription_Status__c", "picklist", picklist=SUBSCRIPTION_STATUS_VALUES,
       values_from="subscription_status", label="Subscription Status"),
    _f("Account", "Next_Renewal_Date__c", "date", label="Next Renewal Date"),
    _f("Account", "Customer_Success_Manager__c", "reference", reference_to="User", label="Customer Success Manager"),
    _f("Account", "Entitlements__c", "textarea", length=LONG_TEXT, label="Entitlements"),
    _f("Account", "Last_Nue_Order__c", label="Last Nue Order"),
    # Flow 6: the customer's contacts, found again by the Nue contact id.
    _f("Contact", "Nue_Contact_Id__c", external_id=True, unique=True, label="Nue Contact Id"),
    # Flow 3: renewals, one opportunity per subscription term, found again by this key.
    _f("Opportunity", "Nue_Renewal_Key__c", external_id=True, unique=True, label="Nue Renewal Key"),
    _f("Opportunity", "Nue_Subscription__c", label="Nue Subscription"),
    _f("Opportunity", "Expansion_Signal__c", "boolean", label="Expansion Signal"),
    _f("Opportunity", "Subscription_Status__c", "picklist", picklist=SUBSCRIPTION_STATUS_VALUES,
       values_from="subscription_status", label="Subscription Status"),
    # Flow 2 on the opportunity whose order made the subscriptions: their MRR and next renewal.
    _f("Opportunity", "MRR__c", "currency", label="MRR"),
    _f("Opportunity", "Next_Renewal_Date__c", "date", label="Next Renewal Date"),
    # Flow 5: one amendment opportunity per change order, found again by this key (the change order's id); and the
    # MRR of the original deal's Contract, where the org uses Contracts.
    _f("Opportunity", "Nue_Amendment_Key__c", external_id=True, unique=True, label="Nue Amendment Key"),
    _f("Contract", "MRR__c", "currency", label="MRR"),
    # Flow 7: quotes reflected on the opportunity, and their lines found again by key.
    _f("Opportunity", "Nue_Quote_Id__c", label="Nue Quote Id"),
    _f("Opportunity", "Nue_Quote_Version__c", "double", label="Nue Quote Version"),
    _f("Opportunity", "Nue_Quote_Total__c", "currency", label="Nue Quote Total"),
    _f("Opportunity", "Nue_Quote_Discount__c", "percent", label="Nue Quote Discount"),
    _f("OpportunityLineItem", "Nue_Line_Key__c", external_id=True, unique=True, label="Nue Line Key"),
)

BILLING_EVENT = "Nue_Billing_Event__c"
CUSTOM_OBJECTS: tuple[ObjectDef, ...] = (
    # Flow 4: invoices and payments, one record per billing event, found again by its key.
    ObjectDef(
        name=BILLING_EVENT, label="Nue Billing Event", label_plural="Nue Billing Events",
        fields=(
            _f(BILLING_EVENT, "Nue_Event_Key__c", external_id=True, unique=True, label="Nue Event Key"),
            _f(BILLING_EVENT, "Account__c", "reference", reference_to="Account", label="Account"),
            _f(BILLING_EVENT, "Invoice_Number__c", label="Invoice Number"),
            _f(BILLING_EVENT, "Amount__c", "currency", label="Amount"),
            _f(BILLING_EVENT, "Status__c", "picklist", picklist=BILLING_STATUS_VALUES, values_from="billing_status",
               label="Status"),
            _f(BILLING_EVENT, "Due_Date__c", "date", label="Due Date"),
            _f(BILLING_EVENT, "Balance__c", "currency", label="Balance"),
            _f(BILLING_EVENT, "Invoice_Status__c", label="Invoice Status"),
            _f(BILLING_EVENT, "Payment_Status__c", label="Payment Status"),
            _f(BILLING_EVENT, "Failure_Detail__c", "textarea", length=LONG_TEXT, label="Failure Detail"),
        ),
    ),
)


def known_fields() -> dict[str, FieldDef]:
    """Every field defined here, by `Object.Field`."""
    fields = [*CUSTOM_FIELDS, *(f for obj in CUSTOM_OBJECTS for f in obj.fields)]
    return {f.qualified: f for f in fields}


def known_objects() -> dict[str, ObjectDef]:
    return {obj.name: obj for obj in CUSTOM_OBJECTS}
