# Disposes of the ship-risk operator's actions (examples/specs/operators.yaml).
#
# Fail closed: an action is blocked unless a rule below names its capability.
# Holding an order is reversible, so it runs; a notification runs but flags a
# person (ALERT), at most notify_cap times per order per hour, so a flood of
# events about one order can never become a flood of messages. Anything else
# the operator might propose is refused.
package fibric.ship_risk

import rego.v1

# Notifications about one entity allowed per hour; the next one is blocked.
notify_cap := 3

default decision := {"decision": "BLOCK", "rule": "default-deny"}

decision := {"decision": "ALLOW", "rule": "orders.hold"} if {
	input.action.capability == "orders.hold"
}

decision := {"decision": "ALERT", "rule": "orders.notify"} if {
	input.action.capability == "orders.notify"
	notifications_last_hour < notify_cap
}

decision := {"decision": "BLOCK", "rule": "orders.notify.cap", "reasons": [reason]} if {
	input.action.capability == "orders.notify"
	notifications_last_hour >= notify_cap
	reason := sprintf(
		"%d notifications about %s in the last hour (cap %d)",
		[notifications_last_hour, input.action.entity_key, notify_cap],
	)
}

# Notifications already applied for this entity in the last hour. Undefined
# when the caller supplied no counts, which leaves a notification at
# default-deny: without the count the cap cannot be checked.
notifications_last_hour := n if {
	n := input.context.counts.entity_capability.last_hour
	is_number(n)
}
