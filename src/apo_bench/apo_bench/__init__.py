"""The APO benchmark in simulation: does a round of takeovers plus APO make the policy better?"""
