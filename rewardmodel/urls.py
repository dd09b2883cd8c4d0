app_name = "rewardmodel"
urlpatterns = []
