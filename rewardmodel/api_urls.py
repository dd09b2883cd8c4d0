from django.urls import path

from rewardmodel import api

app_name = "rewardmodel_api"

urlpatterns = [
    path("projects/<int:pk>/reward-models/", api.RewardModelListView.as_view(), name="versions"),
    path("projects/<int:pk>/status/", api.ProjectStatusView.as_view(), name="status"),
    path("projects/<int:pk>/training/", api.TrainingProgressView.as_view(), name="training"),
    path("projects/<int:pk>/score/", api.ScoreView.as_view(), name="score"),
]
