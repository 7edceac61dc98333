"""Words for the alerts, Swedish first and English second: titles, what to do, message kinds.

docs/alerts.md explains the same alerts at length for coordinators; the instructions here are
the short form that goes into every e-mail, webhook and CAP document.
"""

from __future__ import annotations

# rule -> (title sv, title en)
TITLES: dict[str, tuple[str, str]] = {
    "grid_lost": ("Nätström borta", "Grid lost"),
    "backup_failed": ("Ingen ström – reservkraften har inte startat",
                      "No power – backup power failed"),
    "gen_failed_to_start": ("Elverket startar inte / i fel", "Generator failed to start / fault"),
    "remote_start_not_ready": ("Elverket kan inte fjärrstartas",
                               "Generator not ready for remote start"),
    "gen_max_runtime": ("Elverket har gått länge", "Generator at maximum runtime"),
    "fuel_low": ("Lite bränsle kvar", "Fuel running low"),
    "fuel_for_sale": ("Bränsle för försäljning slut", "Fuel for sale exhausted"),
    "device_offline": ("Enhet svarar inte", "Device offline"),
    "site_silent": ("Ingen kontakt med platsen", "Site silent"),
    "crisis_ack_missing": ("Krismeddelande ej kvitterat", "Crisis message not acknowledged"),
    "regional_grid_lost": ("Regionalt strömavbrott", "Regional grid outage"),
    "exercise_failed": ("Provkörning underkänd", "Generator test run failed"),
    "exercise_overdue": ("Provkörning försenad", "Generator test run overdue"),
}

# rule -> (what to do sv, en)
INSTRUCTIONS: dict[str, tuple[str, str]] = {
    "grid_lost": ("Följ att reservkraften startar. Ring butiken vid behov.",
                  "Check that the backup power starts. Call the shop if needed."),
    "backup_failed": ("Ring butiken och jourhavande tekniker. Platsen saknar ström.",
                      "Call the shop and the technician on duty. The site has no power."),
    "gen_failed_to_start": ("Skicka tekniker. Kontrollera elverkets larm på panelen.",
                            "Send a technician. Check the generator's alarms on its panel."),
    "remote_start_not_ready": ("Be butiken eller teknikern ställa elverket i läge AUTO.",
                               "Ask the shop or the technician to set the generator to AUTO."),
    "gen_max_runtime": ("Planera service: olja, kylvätska, bränslefilter.",
                        "Plan a service: oil, coolant, fuel filter."),
    "fuel_low": ("Beställ tankning till elverket före angiven tid.",
                 "Order a refuel of the generator tank before the time given."),
    "fuel_for_sale": ("Beställ leverans eller hänvisa till annan station.",
                      "Order a delivery or refer customers to another station."),
    "device_offline": ("Tekniker: kontrollera kabel och matning till enheten.",
                       "Technician: check the device's cable and supply."),
    "site_silent": ("Ring butiken. Läget på platsen är okänt tills data kommer.",
                    "Call the shop. The site's situation is unknown until data returns."),
    "crisis_ack_missing": ("Ring butiken och be dem läsa krismeddelandet på panelen.",
                           "Call the shop and ask them to read the crisis message on the panel."),
    "regional_grid_lost": ("Aktivera kommunens rutin för elavbrott. Följ varje plats nedan.",
                           "Activate the municipality's outage routine. Follow each site below."),
    "exercise_failed": ("Skicka tekniker. Provkörningens resultat säger vad som gick fel.",
                        "Send a technician. The test run's result says what went wrong."),
    "exercise_overdue": ("Kontrollera att elverket står i AUTO och att styrenheten har rätt tid; "
                         "starta en provkörning.",
                         "Check that the generator is in AUTO and the controller's clock is "
                         "right; start a test run."),
}

# message kind -> (sv, en)
KINDS: dict[str, tuple[str, str]] = {
    "firing": ("LARM", "ALERT"),
    "repeat": ("PÅMINNELSE", "REMINDER"),
    "escalation": ("ESKALERAT", "ESCALATED"),
    "worse": ("FÖRVÄRRAT", "WORSE"),
    "update": ("UPPDATERING", "UPDATE"),
    "recovery": ("ÅTERSTÄLLT", "RESOLVED"),
}

SEVERITY: dict[str, tuple[str, str]] = {
    "info": ("information", "info"),
    "warning": ("varning", "warning"),
    "critical": ("kritiskt", "critical"),
}


def title(rule: str) -> tuple[str, str]:
    return TITLES.get(rule, (rule, rule))


def instruction(rule: str) -> tuple[str, str]:
    return INSTRUCTIONS.get(rule, ("", ""))
