"""Random surveys for tests: ``n`` households of 1-4 persons, one benefit unit each."""

import numpy as np
import pandas as pd

from weightreg.survey import REGIONS, TENURE_TYPES, Survey


def random_survey(n, rng, *, pe_ids=False, self_employed=0.1, adult_ages=(18, 90), child_ages=(0, 18),
                  earnings_mu=10.0, benunit_heads=False, time_period=None):
    """A random, valid survey.

    Args:
        n: households.
        rng: a numpy Generator.
        pe_ids: PolicyEngine/FRS-style ids (person = household x 1000 + p, benunit = household x 100)
            instead of consecutive person ids and benunit = household.
        self_employed: share of persons with self-employment income.
        adult_ages, child_ages: ``[low, high)`` ages of the first two persons and of the rest.
        earnings_mu: log-mean of employment income.
        benunit_heads: also write ``is_benunit_head`` (on the first person).
        time_period: the survey's year, if any.
    """
    size = rng.integers(1, 5, n)
    hid = np.arange(1, n + 1)
    ph = np.repeat(hid, size)
    m = len(ph)
    pos = np.arange(m) - np.repeat(np.r_[0, np.cumsum(size)[:-1]], size)
    age = np.where(pos < 2, rng.integers(*adult_ages, m), rng.integers(*child_ages, m)).astype(float)
    person = {
        "person_id": ph * 1000 + pos if pe_ids else np.arange(m) + 1,
        "person_benunit_id": ph * 100 if pe_ids else ph,
        "person_household_id": ph,
        "age": age,
        "employment_income": np.where((age >= 18) & (age < 66), rng.lognormal(earnings_mu, 0.8, m), 0.0),
        "self_employment_income": np.where(rng.random(m) < self_employed, rng.lognormal(9.5, 1, m), 0.0),
        "state_pension_reported": np.where(age >= 66, 9000.0, 0.0),
        "is_household_head": pos == 0,
    }
    if benunit_heads:
        person["is_benunit_head"] = pos == 0
    tenure = np.array(TENURE_TYPES)[rng.integers(0, 5, n)]
    household = pd.DataFrame(
        {"household_id": hid, "household_weight": rng.lognormal(7, 0.6, n),
         "region": np.array(REGIONS)[rng.integers(0, 12, n)], "tenure_type": tenure,
         "rent": np.where(pd.Series(tenure).str.startswith("RENT"), rng.uniform(4000, 15000, n), 0.0),
         "council_tax": rng.uniform(1000, 3000, n)}
    )
    benunit = pd.DataFrame({"benunit_id": hid * 100 if pe_ids else hid, "is_married": size >= 2})
    return Survey(pd.DataFrame(person), benunit, household, *([time_period] if time_period else [])).validate()
