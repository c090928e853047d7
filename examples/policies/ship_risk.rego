# Disposes of the ship-risk operator's actions (examples/specs/operators.yaml).
#
# Fail closed: an action is blocked unless a rule below names its capability.
# Holding an order is reversible, so it runs; a notification runs but flags a
# person (ALERT). Anything else the operator might propose is refused.
package fibric.ship_risk

import rego.v1

default decision := {"decision": "BLOCK", "rule": "default-deny"}

decision := {"decision": "ALLOW", "rule": "orders.hold"} if {
	input.action.capability == "orders.hold"
}

decision := {"decision": "ALERT", "rule": "orders.notify"} if {
	input.action.capability == "orders.notify"
}
