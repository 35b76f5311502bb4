"""The science of one day: choosing pairs (:mod:`.pairs`), the physics priors (:mod:`.prior`), the
CNN refiner and hybrid (:mod:`.refine`), uncertainty (:mod:`.uncertainty`) and quality flags
(:mod:`.quality`)."""
